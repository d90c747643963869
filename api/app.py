"""The FastAPI application factory."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import api.models
import api.services.analysis
import api.services.frames  # noqa: F401  (registers the frame jobs)
from api.db import make_engine, session_factory
from api.jobs import JobWorker
from api.limits import BodyLimit, RequestId
from api.migrate import upgrade
from api.principals import Principals
from api.problems import document_problems, install_problem_handlers
from api.routes import (
    auth,
    bureaus,
    findings,
    flights,
    health,
    ledger,
    map_page,
    notices,
    sites,
    users,
)
from api.security import load_or_create_secret
from api.services.notices import housekeeping
from api.services.webhooks import WebhookDispatcher
from dustpatrol.settings import Settings

# Routes are matched in order, one by one (FastAPI tries every route of an included router
# before the next router): the most requested first. No route of one router matches a path
# of another's (a test checks), so the order changes nothing else.
ROUTERS = (
    notices.router,
    ledger.router,
    map_page.router,
    auth.router,
    flights.router,
    findings.router,
    sites.router,
    bureaus.router,
    users.router,
    users.audit_router,
    health.router,
)


def create_app(settings: Settings, *, migrate: bool = True, worker: bool = True) -> FastAPI:
    """The notice service for ``settings``; the database is migrated to the latest schema and,
    unless ``worker`` is False, an in-process job worker runs while the app is up."""
    if migrate:
        upgrade(settings.database.url)
    engine = make_engine(
        settings.database.url, settings.database.echo, settings.database.sqlite_synchronous
    )
    sessions = session_factory(
        engine, short_reads_in_thread=settings.database.short_reads_in_thread
    )
    if settings.queue.url:  # scaled out: Celery workers run the jobs and deliveries
        from api.queue import Broker

        sessions.configure(info={**sessions.kw["info"], "dispatch": Broker(settings)})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        background = (
            BackgroundLease(settings.paths.data_dir / "background.lock", sessions, settings)
            if worker and not settings.queue.url
            else None
        )
        if background is not None:
            background.start()
        # Everything loaded so far (modules, the app, the schema) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it all
        # (pauses of tens of ms in the middle of requests otherwise).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if background is not None:
                background.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="dustpatrol",
        summary="Drone environmental inspection: sites, findings and rectification notices.",
        version="0.1.0",
    )
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.settings = settings
    app.state.principals = Principals(settings.paths.data_dir)
    app.state.secret = load_or_create_secret(
        settings.server.secret_key.get_secret_value() if settings.server.secret_key else None,
        settings.paths.data_dir,
    )
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, default_bytes=int(settings.server.max_body_mb * 2**20))
    app.add_middleware(RequestId)
    document_problems(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=map_page.STATIC_DIR), name="static")
    return app


log = logging.getLogger(__name__)


class BackgroundLease:
    """The job worker and the webhook dispatcher run in one server process of a data folder:
    the one holding an exclusive lock on ``path``. With ``serve --workers N`` the others try
    again every few seconds, so the work moves on when its holder stops or dies (the kernel
    releases a dead process's lock)."""

    def __init__(self, path: Path, sessions: Any, settings: Settings, retry_s: float = 5.0) -> None:
        self.path = path
        self.retry_s = retry_s
        self.sessions = sessions
        self.settings = settings
        self._fd: int | None = None
        self._jobs: JobWorker | None = None
        self._webhooks: WebhookDispatcher | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def start(self) -> None:
        if not self._try():
            self._thread = threading.Thread(target=self._wait, name="dustpatrol-lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._webhooks is not None:
            self._webhooks.stop()
        if self._jobs is not None:
            self._jobs.stop()
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _wait(self) -> None:
        while not self._stop.wait(self.retry_s):
            if self._try():
                return

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd  # held only once the file names its holder
        self._jobs = JobWorker(
            self.sessions, self.settings, housekeeping_s=5.0, housekeeping=housekeeping
        )
        self._webhooks = WebhookDispatcher(self.sessions, self.settings)
        self._jobs.start()
        self._webhooks.start()
        log.info("process %d runs the job worker and the webhook dispatcher", os.getpid())
        return True
