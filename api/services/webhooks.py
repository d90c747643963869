"""Delivering notices to bureaus' webhooks: at least once, signed, retried, logged.

A message is written to the outbox in the same transaction as the notice change, so a crash
can delay a delivery but never lose it. Deliveries carry ``X-Dustpatrol-Signature:
sha256=<hex HMAC-SHA256 of the body>`` keyed with the bureau's secret and an
``X-Dustpatrol-Delivery`` id the receiver uses to drop duplicates.

Deliveries run on their own dispatcher thread (`WebhookDispatcher`), never on the job
worker's: a slow or dead endpoint cannot hold up frame analysis. Scaled out (``queue.url``),
Celery workers of the ``webhooks`` queue deliver instead, one bureau per message
(`WebhookDispatcher.serve`), with the same claims, so two workers never post the same
attempt. Bureaus are served in parallel, each bureau's messages in order; an endpoint that
keeps failing is left alone for a while (a circuit breaker) instead of tying up a delivery
slot on every round. Webhook URLs must not reach into the server's own network (loopback,
link-local, private addresses) unless ``server.allow_private_webhooks`` says so; that is
checked when the URL is set and again, after name resolution, before every delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.db import as_utc
from api.errors import InvalidInputError
from api.jobs import send_after_commit
from api.models.bureaus import Bureau
from api.models.outbox import DeliveryAttempt, OutboxMessage
from dustpatrol.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
BATCH = 50


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def announce(session: Session, bureau_id: int | None, event: str, payload: dict[str, Any]) -> None:
    """Queue a message for the bureau's webhook (no-op for a bureau without one)."""
    if bureau_id is None:
        return
    bureau = session.get(Bureau, bureau_id)
    if bureau is None or not bureau.webhook_url:
        return
    session.add(OutboxMessage(bureau_id=bureau_id, event=event, payload=payload))
    send_after_commit(session, ("delivery", bureau_id))  # scaled out: a worker delivers


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def webhook_url_problem(url: str, allow_private: bool, resolve: bool = True) -> str:
    """Why the server must not post to ``url``, or "": only http(s); no address in the
    loopback, link-local (cloud metadata), private or reserved ranges unless allowed. A host
    name is resolved (when ``resolve``) and refused if any address it has is such."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"webhook URL {url!r} is not an http(s) URL with a host"
    if allow_private:
        return ""
    host = parts.hostname
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            addresses = ["127.0.0.1"]
        elif not resolve:
            return ""
        else:
            try:
                infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                return ""  # not resolvable now: checked again before each delivery
            addresses = [str(info[4][0]) for info in infos]
    blocked = [a for a in addresses if _private(a)]
    if blocked:
        return (
            f"webhook URL {url!r} points into a private, loopback or link-local network "
            f"({', '.join(sorted(set(blocked)))}); an admin allows intranet receivers with "
            "server.allow_private_webhooks"
        )
    return ""


def check_webhook_url(url: str | None, settings: Settings) -> None:
    """Refuse (422) a webhook URL the server must not post to."""
    if url:
        problem = webhook_url_problem(url, settings.server.allow_private_webhooks)
        if problem:
            raise InvalidInputError(problem)


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    opened: int = 0  # how many times in a row it opened: each doubles the pause


class WebhookDispatcher:
    """Delivers due outbox messages on its own thread, ``concurrency`` bureaus at a time."""

    def __init__(
        self,
        sessions: sessionmaker[Any],
        settings: Settings,
        *,
        poll_s: float = 1.0,
        concurrency: int = 4,
        timeout_s: float | None = None,
        breaker_failures: int = 3,
        breaker_pause_s: float = 60.0,
        max_pause_s: float = 900.0,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.poll_s = poll_s
        self.timeout_s = timeout_s or settings.server.webhook_timeout_s
        self.breaker_failures = breaker_failures
        self.breaker_pause_s = breaker_pause_s
        self.max_pause_s = max_pause_s
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="dustpatrol-webhook")
        self._busy: dict[int, Future[None]] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dustpatrol-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.dispatch()
            except Exception:  # database briefly unavailable: wait and go on
                log.exception("webhook dispatcher error")
            self._stop.wait(self.poll_s)

    def dispatch(self, now: datetime | None = None) -> list[int]:
        """Start delivering for every bureau with due messages that is neither being served
        nor behind an open breaker; returns those bureaus."""
        now = now or datetime.now(UTC)
        with self.sessions() as session:
            due = session.execute(
                select(OutboxMessage.bureau_id, Bureau.webhook_url)
                .join(Bureau, Bureau.id == OutboxMessage.bureau_id, isouter=True)
                .where(OutboxMessage.state == "pending", OutboxMessage.next_attempt_at <= now)
                .group_by(OutboxMessage.bureau_id, Bureau.webhook_url)
            ).all()
        started = []
        with self._lock:
            self._busy = {b: f for b, f in self._busy.items() if not f.done()}
            for bureau_id, url in due:
                if bureau_id in self._busy or self._paused(url):
                    continue
                self._busy[bureau_id] = self._pool.submit(self.serve, bureau_id)
                started.append(bureau_id)
        return started

    def _paused(self, url: str | None) -> bool:
        breaker = self._breakers.get(url or "")
        return breaker is not None and breaker.open_until > time.monotonic()

    def _outcome(self, url: str, ok: bool) -> None:
        with self._lock:
            breaker = self._breakers.setdefault(url, _Breaker())
            if ok:
                self._breakers.pop(url, None)
                return
            breaker.failures += 1
            if breaker.failures >= self.breaker_failures:
                pause = min(self.breaker_pause_s * 2**breaker.opened, self.max_pause_s)
                breaker.open_until = time.monotonic() + pause
                breaker.opened += 1
                breaker.failures = self.breaker_failures - 1  # half-open: one more failure
                log.warning("webhook %s keeps failing: paused for %.0f s", url, pause)

    def serve(self, bureau_id: int) -> None:
        """Deliver the bureau's pending messages oldest first, stopping at the first failure
        or at one that waits for its retry: a bureau gets its messages in the order they
        were made (a retried one holds the later ones back)."""
        try:
            with self.sessions() as session, httpx.Client(timeout=self.timeout_s) as client:
                pending = session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.bureau_id == bureau_id, OutboxMessage.state == "pending")
                    .order_by(OutboxMessage.id)
                    .limit(BATCH)
                ).all()
                for message in pending:
                    if (
                        self._stop.is_set()
                        or as_utc(message.next_attempt_at) > datetime.now(UTC)
                        or not self._deliver(session, client, message)
                    ):
                        break
        except Exception:
            log.exception("webhook delivery for bureau %s failed", bureau_id)

    def _deliver(self, session: Session, client: httpx.Client, message: OutboxMessage) -> bool:
        # Claim the message (another process may serve the same bureau): the attempt count is
        # the version, and the lease keeps others off it until this attempt has an outcome.
        lease = datetime.now(UTC) + timedelta(seconds=3 * self.timeout_s + 5)
        claimed = session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == message.id,
                OutboxMessage.state == "pending",
                OutboxMessage.attempts == message.attempts,
            )
            .values(attempts=OutboxMessage.attempts + 1, next_attempt_at=lease)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return False
        session.refresh(message)
        bureau = session.get(Bureau, message.bureau_id)
        url = bureau.webhook_url if bureau else None
        if bureau is None or not url:
            message.state = "failed"
            session.commit()
            return True
        status_code, error = self._post(client, bureau, message)
        session.add(
            DeliveryAttempt(message_id=message.id, url=url, status_code=status_code, error=error)
        )
        if error is None:
            message.state = "delivered"
            message.delivered_at = datetime.now(UTC)
        elif message.attempts >= MAX_ATTEMPTS:
            message.state = "failed"
        else:
            message.next_attempt_at = datetime.now(UTC) + timedelta(
                seconds=min(3600, 2**message.attempts)
            )
        session.commit()  # one message at a time: a crash loses at most one attempt's record
        self._outcome(url, error is None)
        return error is None

    def _post(
        self, client: httpx.Client, bureau: Bureau, message: OutboxMessage
    ) -> tuple[int | None, str | None]:
        url = bureau.webhook_url or ""
        refused = webhook_url_problem(url, self.settings.server.allow_private_webhooks)
        if refused:
            return None, f"refused: {refused}"
        body = json.dumps(
            {"event": message.event, "delivery": message.id, **message.payload},
            ensure_ascii=False,
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Dustpatrol-Event": message.event,
            "X-Dustpatrol-Delivery": str(message.id),
            "X-Dustpatrol-Signature": sign(bureau.webhook_secret or "", body),
        }
        try:
            response = client.post(url, content=body, headers=headers, follow_redirects=False)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"
