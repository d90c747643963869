"""Bureaus: created by admins, listed by staff."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import AdminUser, SessionDep, StaffUser
from api.errors import ConflictError
from api.models.bureaus import Bureau, BureauCreate, BureauPublic
from api.models.users import User
from api.services.audit import audit
from api.services.webhooks import check_webhook_url
from dustpatrol.settings import Settings

router = APIRouter(prefix="/bureaus", tags=["bureaus"])


@router.post("", status_code=status.HTTP_201_CREATED)
def create_bureau(
    body: BureauCreate, request: Request, session: SessionDep, admin: AdminUser
) -> BureauPublic:
    """Register a bureau, with the webhook its notices are posted to (optional)."""
    return BureauPublic.model_validate(
        add_bureau(session, request.app.state.settings, body, actor=admin)
    )


def add_bureau(
    session: Session, settings: Settings, body: BureauCreate, actor: User | None = None
) -> Bureau:
    """Create a bureau (audited): the name must be free and the webhook one the server may
    post to."""
    webhook_url = str(body.webhook_url) if body.webhook_url else None
    check_webhook_url(webhook_url, settings)
    if session.scalar(select(Bureau).where(Bureau.name == body.name)) is not None:
        raise ConflictError(f"bureau {body.name!r} exists already")
    bureau = Bureau(name=body.name, webhook_url=webhook_url, webhook_secret=body.webhook_secret)
    session.add(bureau)
    audit(session, actor, "bureau.created", body.name, webhook=webhook_url)
    try:
        session.commit()
    except IntegrityError:  # created by a request running at the same moment
        session.rollback()
        raise ConflictError(f"bureau {body.name!r} exists already") from None
    return bureau


@router.get("")
def list_bureaus(session: SessionDep, _: StaffUser) -> list[BureauPublic]:
    return [
        BureauPublic.model_validate(b)
        for b in session.scalars(select(Bureau).order_by(Bureau.name))
    ]
