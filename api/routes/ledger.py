"""Ledger and rankings per bureau or per site, as JSON or CSV."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUser, SessionDep, run_short
from api.services.ledger import ledger, to_csv

router = APIRouter(prefix="/ledger", tags=["ledger"])


class Grouping(StrEnum):
    BUREAU = "bureau"
    SITE = "site"


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


@router.get(
    "/{grouping}",
    response_model=None,
    responses={
        200: {
            "description": "the ledger rows, ranked; CSV with ?format=csv",
            "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def get_ledger(
    grouping: Grouping,
    session: SessionDep,
    user: CurrentUser,
    since: Annotated[
        datetime | None, Query(description="notices issued from (ISO 8601, with zone)")
    ] = None,
    until: Annotated[datetime | None, Query(description="notices issued before")] = None,
    output: Annotated[Format, Query(alias="format")] = Format.JSON,
) -> Response:
    """Issued, open, rectified, on time, overdue and average hours to rectify, ranked by
    on-time rate. A bureau user gets its own rows only."""
    if grouping is Grouping.BUREAU and since is None and until is None:
        rows = await run_short(session, ledger, session, user, grouping.value)  # a row a bureau
    else:  # per site, or counted over a period: may read many rows, off the event loop
        rows = await run_in_threadpool(ledger, session, user, grouping.value, since, until)
    if output is Format.CSV:
        return Response(
            to_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="ledger-{grouping.value}.csv"'},
        )
    return JSONResponse([{"rank": rank, **row.public()} for rank, row in enumerate(rows, start=1)])
