"""A small client of the notice service's HTTP API (what `dustpatrol analyze --api` and the
demo use to upload frames and findings and to act as each role)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from dustpatrol.errors import DustpatrolError
from dustpatrol.settings import Settings


class ApiError(DustpatrolError):
    """The service refused a request or could not be reached."""


class ServiceUnreachableError(ApiError):
    """The service did not answer (down, restarting, or the field link dropped)."""


class ServiceClient:
    """One user's session with the service at ``base_url`` (logs in with a password or uses
    an API key)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        if api_key:
            self._http.headers["X-API-Key"] = api_key
        elif username and password:
            token = self._send(
                "POST", "/auth/token", data={"username": username, "password": password}
            )["access_token"]
            self._http.headers["Authorization"] = f"Bearer {token}"
        self.username = username

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; connection errors are retried with back-off (the service may be
        restarting, the field link may drop), refusals are raised at once with the service's
        own explanation."""
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise ServiceUnreachableError(
                        f"cannot reach the service at {self.base_url} ({exc}); is it running?"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            if response.status_code >= 400:
                try:
                    problem = response.json()
                    detail = problem.get("detail") or problem.get("title") or response.text
                except ValueError:
                    detail = response.text
                raise ApiError(f"{method} {path}: {response.status_code} {detail}")
            if response.headers.get("content-type", "").startswith(
                ("application/json", "application/geo+json", "application/problem+json")
            ):
                return response.json()
            return response.content
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self._send("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json: Any = None) -> Any:
        return self._send("POST", path, json=json)

    def upload(self, path: str, file: Path, content_type: str, **params: Any) -> Any:
        return self._send(
            "POST",
            path,
            params={k: v for k, v in params.items() if v is not None},
            files={"file": (file.name, file.read_bytes(), content_type)},
        )

    def wait_until_up(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ApiError(f"the service at {self.base_url} did not come up in {timeout_s} s")
            time.sleep(0.2)


class FlightUpload:
    """A flight on the service: its frames go up one by one, its findings at the end."""

    def __init__(
        self, client: ServiceClient, name: str, drone: str = "", operator: str = ""
    ) -> None:
        self.client = client
        self.flight_id = int(
            client.post("/flights", {"name": name, "drone": drone, "operator": operator})["id"]
        )
        self.failed: list[str] = []

    def frame(self, path: Path) -> bool:
        """Upload one frame; a refused frame is remembered (and reported), not fatal. An
        unreachable service raises `ServiceUnreachableError`: the frame was not refused, try again
        later."""
        try:
            self.client.upload(f"/flights/{self.flight_id}/frames", path, "image/jpeg")
        except ServiceUnreachableError:
            raise
        except ApiError as exc:
            self.failed.append(f"{path.name}: {exc}")
            return False
        return True

    def wait_for_frames(self, timeout_s: float = 120.0) -> None:
        """Until the service has read every uploaded frame's metadata (verification of
        rectified notices needs their footprints)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frames = self.client.get(f"/flights/{self.flight_id}/frames")
            if all(f["status"] != "pending" for f in frames):
                return
            time.sleep(0.3)
        raise ApiError(f"the service did not read the frames of flight {self.flight_id} in time")

    def complete(self, timeout_s: float = 600.0) -> None:
        """Tell the service the last frame is in; wait until it has made the findings."""
        self.client.post(f"/flights/{self.flight_id}/complete")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.client.get(f"/flights/{self.flight_id}")["analysed_at"]:
                return
            time.sleep(0.3)
        raise ApiError(f"the service did not analyse flight {self.flight_id} in {timeout_s:g} s")

    def findings(self, collection: dict[str, Any]) -> dict[str, Any]:
        self.wait_for_frames()
        result: dict[str, Any] = self.client.post(f"/flights/{self.flight_id}/findings", collection)
        return result


RETRY_UNREACHABLE_S = 2.0  # pause before trying an unreachable service again


class FolderUploader:
    """Watches a folder while the drone flies and uploads each new frame as it appears (the
    simulated camera, or a card reader synced during the flight, writes them). Files are taken
    once whole: writers rename finished files into place."""

    def __init__(self, folder: Path, upload: FlightUpload, poll_s: float = 0.2) -> None:
        self.folder = folder
        self.upload = upload
        self.poll_s = poll_s
        self.seen: set[str] = set()
        self.unreachable = 0  # sweeps cut short because the service did not answer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-uploader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Upload the frames still waiting, then stop; frames the service could not take
        because it was unreachable are listed in ``upload.failed``."""
        self._stop.set()
        self._thread.join()
        if self._sweep():
            return
        for name in sorted(self.waiting):
            self.upload.failed.append(f"{name}: the service stayed unreachable")

    @property
    def waiting(self) -> set[str]:
        """Frames in the folder not uploaded yet."""
        if not self.folder.is_dir():
            return set()
        return {p.name for p in self._frames()} - self.seen

    def _frames(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.poll_s if self._sweep() else RETRY_UNREACHABLE_S)

    def _sweep(self) -> bool:
        """Upload the new frames; False when the service was unreachable (they wait)."""
        if not self.folder.is_dir():
            return True
        for path in self._frames():
            if path.name in self.seen:
                continue
            try:
                self.upload.frame(path)
            except ServiceUnreachableError:
                self.unreachable += 1
                return False  # this frame and the rest go up at the next sweep
            self.seen.add(path.name)
        return True


def open_flight(url: str, settings: Settings, name: str, drone: str = "") -> FlightUpload:
    """A new flight on the service at ``url``, with the API key of the settings (checked
    before any work is done)."""
    key = settings.client.api_key
    if key is None:
        raise DustpatrolError(
            "uploading needs an API key: set client.api_key in the settings file or "
            "DUSTPATROL_CLIENT__API_KEY (an admin creates one with POST /users/{id}/api-keys)"
        )
    client = ServiceClient(url, api_key=key.get_secret_value())
    client.get("/auth/me")  # fail now, before any work, if the key or URL is wrong
    return FlightUpload(client, name, drone=drone)
