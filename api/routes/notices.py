"""Rectification notices: a bureau sees its own; transitions follow the lifecycle."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, UploadFile

from api.deps import CurrentUser, SessionDep, run_short
from api.models.notices import (
    NOTICE_SUMMARIES,
    FindingClass,
    NoticePhotoPublic,
    NoticePublic,
    NoticeState,
    NoticeSummary,
    TransitionBody,
)
from api.problems import described_pattern
from api.services import notices as service
from api.services.frames import MAX_FRAME_BYTES
from api.services.notice_pdf import notice_pdf

router = APIRouter(prefix="/notices", tags=["notices"])


@router.get(
    "",
    response_model=list[NoticeSummary],
    responses={
        200: {
            "headers": {
                "Link": {
                    "description": 'the next page, `<...>; rel="next"`, absent on the last',
                    "schema": {"type": "string"},
                }
            }
        }
    },
)
async def list_notices(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    state: NoticeState | None = None,
    open: Annotated[
        bool, Query(description="only open notices (issued to escalated, not yet verified)")
    ] = False,
    site: str | None = None,
    finding_class: FindingClass | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None,
        Query(
            pattern=described_pattern(
                r"^[A-Za-z0-9_-]{1,40}$", "the cursor of a previous page's next link"
            ),
            description="from the previous page's next link (opaque: one this server gave)",
        ),
    ] = None,
) -> Response:
    """The notices you may see (a bureau: its own), oldest first, a page at a time."""
    # A page is one bounded keyset query (at most 501 rows on an index).
    page, following = await run_short(
        session,
        partial(
            service.list_notices,
            session,
            user,
            state=state,
            open_only=open,
            site=site,
            finding_class=finding_class,
            limit=limit,
            cursor=cursor,
        ),
    )
    headers = {}
    if following is not None:
        next_url = request.url.include_query_params(cursor=following)
        headers["Link"] = f'<{next_url}>; rel="next"'
    # Typed rows of our own database, serialised once by the schema's own adapter (FastAPI
    # would validate them a second time).
    return Response(
        NOTICE_SUMMARIES.dump_json(page), media_type="application/json", headers=headers
    )


@router.get("/{number}")
def get_notice(number: str, session: SessionDep, user: CurrentUser) -> NoticePublic:
    return service.notice_public(session, service.get_notice(session, user, number))


@router.post("/{number}/transitions")
def transition(
    number: str, body: TransitionBody, request: Request, session: SessionDep, user: CurrentUser
) -> NoticePublic:
    """Move the notice (e.g. to acknowledged, rectified, verified, closed); 409 if not allowed."""
    notice = service.transition(
        session, request.app.state.settings, user, number, body.to, body.note, body.attachments
    )
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


@router.post("/{number}/photos", status_code=201)
async def upload_photo(
    number: str, file: UploadFile, request: Request, session: SessionDep, user: CurrentUser
) -> NoticePhotoPublic:
    """Add a JPEG (e.g. the bureau's photo of the rectified site); name its sha256 in the
    attachments of a transition. The same photo uploaded again is stored once."""
    data = await file.read(MAX_FRAME_BYTES + 1)
    return service.add_photo(
        session, request.app.state.settings, user, number, data, file.filename or "photo.jpg"
    )


@router.get(
    "/{number}/photos/{sha256}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the photo"}},
)
def get_photo(
    number: str, sha256: str, request: Request, session: SessionDep, user: CurrentUser
) -> Response:
    data = service.get_photo(session, request.app.state.settings, user, number, sha256)
    return Response(data, media_type="image/jpeg")
