"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import api.models
import api.services.analysis
import api.services.frames  # noqa: F401  (registers the frame jobs)
from api.db import make_engine, session_factory
from api.jobs import JobWorker
from api.limits import BodyLimit
from api.migrate import upgrade
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


def create_app(settings: Settings, *, migrate: bool = True, worker: bool = True) -> FastAPI:
    """The notice service for ``settings``; the database is migrated to the latest schema and,
    unless ``worker`` is False, an in-process job worker runs while the app is up."""
    if migrate:
        upgrade(settings.database.url)
    engine = make_engine(settings.database.url, settings.database.echo)
    sessions = session_factory(engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        jobs = (
            JobWorker(sessions, settings, housekeeping_s=5.0, housekeeping=housekeeping)
            if worker
            else None
        )
        webhooks = WebhookDispatcher(sessions, settings) if worker else None
        if jobs is not None and webhooks is not None:
            jobs.start()
            webhooks.start()
        try:
            yield
        finally:
            if jobs is not None and webhooks is not None:
                webhooks.stop()
                jobs.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="dustpatrol",
        summary="Drone environmental inspection: sites, findings and rectification notices.",
        version="0.1.0",
    )
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.settings = settings
    app.state.secret = load_or_create_secret(
        settings.server.secret_key.get_secret_value() if settings.server.secret_key else None,
        settings.paths.data_dir,
    )
    install_problem_handlers(app)
    app.add_middleware(BodyLimit, default_bytes=int(settings.server.max_body_mb * 2**20))
    document_problems(app)
    for module in (
        health,
        auth,
        users,
        bureaus,
        sites,
        flights,
        findings,
        notices,
        ledger,
        map_page,
    ):
        app.include_router(module.router)
    app.include_router(users.audit_router)
    app.mount("/static", StaticFiles(directory=map_page.STATIC_DIR), name="static")
    return app
