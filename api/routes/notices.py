"""Rectification notices: a bureau sees its own; transitions follow the lifecycle."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import CurrentUser, SessionDep
from api.models.notices import Notice, NoticePublic, TransitionBody
from api.services import notices as service
from api.services.notice_pdf import notice_pdf

router = APIRouter(prefix="/notices", tags=["notices"])


@router.get("")
def list_notices(
    session: SessionDep, user: CurrentUser, state: str | None = None, site: str | None = None
) -> list[NoticePublic]:
    query = service.visible_notices(user)
    if state:
        query = query.where(Notice.state == state)
    notices = [service.notice_public(session, n) for n in session.scalars(query)]
    return [n for n in notices if site is None or n.site == site]


@router.get("/{number}")
def get_notice(number: str, session: SessionDep, user: CurrentUser) -> NoticePublic:
    return service.notice_public(session, service.get_notice(session, user, number))


@router.post("/{number}/transitions")
def transition(
    number: str, body: TransitionBody, session: SessionDep, user: CurrentUser
) -> NoticePublic:
    """Move the notice (e.g. to acknowledged, rectified, verified, closed); 409 if not allowed."""
    notice = service.transition(session, user, number, body.to, body.note, body.attachments)
    return service.notice_public(session, notice)


@router.get(
    "/{number}/pdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "the notice as a PDF (zh-CN)"},
        503: {"description": "no font with Chinese glyphs is installed on the server"},
    },
)
def get_notice_pdf(
    number: str, request: Request, session: SessionDep, user: CurrentUser
) -> Response:
    """The notice as a printable PDF in Chinese: text, problems, site map, photos, audit trail."""
    notice = service.get_notice(session, user, number)
    data = notice_pdf(session, request.app.state.settings, notice)
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{notice.number}.pdf"'},
    )
