"""Liveness and readiness, for people and for a load balancer in front of several processes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.deps import SessionDep
from dustpatrol.storage import StorageError, open_storage

router = APIRouter(tags=["health"])


@router.get("/health")
def health(session: SessionDep) -> dict[str, str]:
    """The service answers and its database is reachable."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/health/live")
async def live() -> dict[str, str]:
    """This process answers (nothing else is checked: a load balancer restarts a process
    that stops answering here)."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    responses={503: {"description": "a part the service needs does not answer"}},
)
def ready(request: Request, session: SessionDep) -> Any:
    """The database and the file store answer: send this process requests. A 503 names the
    part that does not answer, so a load balancer takes the process out of rotation."""
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        open_storage(request.app.state.settings).exists("crops/ready/probe")
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = f"unreachable: {exc}"
    ok = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ok else "unavailable", "checks": checks}
    return body if ok else JSONResponse(body, status_code=503, headers={"Retry-After": "10"})
