"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

import api.models  # noqa: F401  (registers every table)
from api.db import make_engine, session_factory
from api.migrate import upgrade
from api.problems import install_problem_handlers
from api.routes import auth, bureaus, health, sites, users
from api.security import load_or_create_secret
from dustpatrol.settings import Settings


def create_app(settings: Settings, *, migrate: bool = True) -> FastAPI:
    """The notice service for ``settings``; the database is migrated to the latest schema."""
    if migrate:
        upgrade(settings.database.url)
    engine = make_engine(settings.database.url, settings.database.echo)
    app = FastAPI(
        title="dustpatrol",
        summary="Drone environmental inspection: sites, findings and rectification notices.",
        version="0.1.0",
    )
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.secret = load_or_create_secret(
        settings.server.secret_key.get_secret_value() if settings.server.secret_key else None,
        settings.paths.data_dir,
    )
    install_problem_handlers(app)
    for module in (health, auth, users, bureaus, sites):
        app.include_router(module.router)
    return app
