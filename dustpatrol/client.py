"""A small client of the notice service's HTTP API (what `dustpatrol analyze --api` and the
demo use to upload frames and findings and to act as each role)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from dustpatrol.errors import DustpatrolError


class ApiError(DustpatrolError):
    """The service refused a request or could not be reached."""


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
                    raise ApiError(
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
        """Upload one frame; a refused frame is remembered (and reported), not fatal."""
        try:
            self.client.upload(f"/flights/{self.flight_id}/frames", path, "image/jpeg")
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


class FolderUploader:
    """Watches a folder while the drone flies and uploads each new frame as it appears (the
    simulated camera, or a card reader synced during the flight, writes them). Files are taken
    once whole: writers rename finished files into place."""

    def __init__(self, folder: Path, upload: FlightUpload, poll_s: float = 0.2) -> None:
        self.folder = folder
        self.upload = upload
        self.poll_s = poll_s
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-uploader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        """Upload the frames still waiting, then stop."""
        self._stop.set()
        self._thread.join()
        self._sweep()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sweep():
                self._stop.wait(self.poll_s)

    def _sweep(self) -> bool:
        if not self.folder.is_dir():
            return False
        fresh = sorted(
            p
            for p in self.folder.iterdir()
            if p.suffix.lower() in (".jpg", ".jpeg") and p.name not in self.seen
        )
        for path in fresh:
            self.seen.add(path.name)
            self.upload.frame(path)
        return bool(fresh)
