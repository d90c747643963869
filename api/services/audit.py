"""Writing and reading the audit log (in the caller's transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.models.audit import AuditEvent
from api.models.users import User


def audit(session: Session, actor: User | None, action: str, subject: str, **detail: Any) -> None:
    """Record ``action`` on ``subject`` by ``actor`` (None: the server's own command line)."""
    session.add(
        AuditEvent(
            actor_id=actor.id if actor else None, action=action, subject=subject, detail=detail
        )
    )


def recent(session: Session, action: str | None = None, limit: int = 200) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(session.scalars(query))
