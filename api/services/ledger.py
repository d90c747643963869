"""The ledger: per bureau and per site, how notices were handled; rankings by on-time rate."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from api.models.bureaus import Bureau
from api.models.notices import OPEN_STATES, Notice, NoticeEvent, NoticeState
from api.models.sites import Site
from api.models.users import Role, User


@dataclass(slots=True)
class LedgerRow:
    key: str  # bureau name or site id
    bureau: str | None
    issued: int = 0
    open: int = 0
    rectified: int = 0
    on_time: int = 0
    overdue: int = 0
    due: int = 0  # rectified, or past the deadline: the notices an on-time rate is fair on
    hours_to_rectify_total: float = 0.0

    @property
    def on_time_rate(self) -> float | None:
        return self.on_time / self.due if self.due else None

    @property
    def average_hours_to_rectify(self) -> float | None:
        return self.hours_to_rectify_total / self.rectified if self.rectified else None

    def public(self) -> dict[str, object]:
        data = asdict(self)
        del data["hours_to_rectify_total"]
        rate, hours = self.on_time_rate, self.average_hours_to_rectify
        data["on_time_rate"] = None if rate is None else round(rate, 4)
        data["average_hours_to_rectify"] = None if hours is None else round(hours, 2)
        return data


def ledger(
    session: Session,
    user: User,
    by: str,
    since: datetime | None = None,
    until: datetime | None = None,
    now: datetime | None = None,
) -> list[LedgerRow]:
    """Rows per ``by`` ("bureau" or "site"), ranked: best on-time rate first, then fastest.
    One aggregate query: the database does the counting, however many notices there are."""
    now = now or datetime.now(UTC)
    events = (
        select(
            NoticeEvent.notice_id.label("notice_id"),
            func.min(
                case((NoticeEvent.to_state == NoticeState.RECTIFIED.value, NoticeEvent.at))
            ).label("rectified_at"),
            func.max(case((NoticeEvent.to_state == NoticeState.OVERDUE.value, 1), else_=0)).label(
                "went_overdue"
            ),
        )
        .group_by(NoticeEvent.notice_id)
        .subquery()
    )
    rectified = events.c.rectified_at.is_not(None)
    went_overdue = events.c.went_overdue == 1
    past_deadline = Notice.deadline < now
    waiting = [s.value for s in OPEN_STATES if s is not NoticeState.RECTIFIED]
    key = Bureau.name if by == "bureau" else Site.site_id

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0))

    query = (
        select(
            key,
            func.min(Bureau.name),
            func.count(Notice.id),
            count(Notice.state.in_(waiting)),
            count(rectified),
            count(rectified & (events.c.rectified_at <= Notice.deadline)),
            count(went_overdue | (~rectified & past_deadline)),
            count(rectified | past_deadline | went_overdue),
            func.sum(case((rectified, _hours(session, events.c.rectified_at, Notice.issued_at)))),
        )
        .select_from(Notice)
        .join(Site, Notice.site_id == Site.id)
        .outerjoin(Bureau, Notice.bureau_id == Bureau.id)
        .outerjoin(events, events.c.notice_id == Notice.id)
        .where(Notice.state != NoticeState.REJECTED.value)
        .group_by(key)
    )
    if user.role == Role.BUREAU:
        query = query.where(Notice.bureau_id == user.bureau_id)
    if since is not None:
        query = query.where(Notice.issued_at >= since)
    if until is not None:
        query = query.where(Notice.issued_at < until)
    rows = [
        LedgerRow(
            key=group if group is not None else "(none)",
            bureau=bureau,
            issued=int(issued),
            open=int(open_ or 0),
            rectified=int(done or 0),
            on_time=int(on_time or 0),
            overdue=int(overdue or 0),
            due=int(due or 0),
            hours_to_rectify_total=float(hours or 0.0),
        )
        for group, bureau, issued, open_, done, on_time, overdue, due, hours in session.execute(
            query
        )
    ]
    return sorted(
        rows,
        key=lambda r: (
            -(r.on_time_rate if r.on_time_rate is not None else -1.0),
            r.average_hours_to_rectify or 1e9,
            r.key,
        ),
    )


def _hours(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in hours, in the database's own date arithmetic."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", later - earlier) / 3600.0
    return (func.julianday(later) - func.julianday(earlier)) * 24.0


def to_csv(rows: list[LedgerRow]) -> str:
    buffer = io.StringIO()
    fields = [
        "rank",
        "key",
        "bureau",
        "issued",
        "open",
        "rectified",
        "on_time",
        "overdue",
        "due",
        "on_time_rate",
        "average_hours_to_rectify",
    ]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for rank, row in enumerate(rows, start=1):
        writer.writerow({"rank": rank, **row.public()})
    return buffer.getvalue()
