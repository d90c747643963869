"""The ASGI entry point for several server processes (``dustpatrol serve --workers N``, or
``uvicorn --factory api.asgi:create`` / gunicorn with uvicorn workers): each process builds
the app from the same settings, the TOML file named by ``DUSTPATROL_CONFIG`` and the
environment. Migrations are run once by ``serve`` before the processes start."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from dustpatrol.settings import load_settings


def create() -> FastAPI:
    return create_app(load_settings(), migrate=False)
