"""The ledger: per bureau and per site, how notices were handled; rankings by on-time rate."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.db import as_utc
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
    """Rows per ``by`` ("bureau" or "site"), ranked: best on-time rate first, then fastest."""
    now = now or datetime.now(UTC)
    query = select(Notice).where(Notice.state != NoticeState.REJECTED.value)
    if user.role == Role.BUREAU:
        query = query.where(Notice.bureau_id == user.bureau_id)
    notices = [
        n
        for n in session.scalars(query)
        if (since is None or as_utc(n.issued_at) >= since)
        and (until is None or as_utc(n.issued_at) < until)
    ]
    ids = [n.id for n in notices]
    first_reached: dict[tuple[int, str], datetime] = {}
    for event in session.scalars(
        select(NoticeEvent).where(NoticeEvent.notice_id.in_(ids)).order_by(NoticeEvent.id)
    ):
        first_reached.setdefault((event.notice_id, event.to_state), as_utc(event.at))
    bureaus = {b.id: b.name for b in session.scalars(select(Bureau))}
    sites = {s.id: s.site_id for s in session.scalars(select(Site))}
    rows: dict[str, LedgerRow] = {}
    for notice in notices:
        bureau = bureaus.get(notice.bureau_id) if notice.bureau_id else None
        key = (bureau or "(none)") if by == "bureau" else sites.get(notice.site_id, "?")
        row = rows.setdefault(key, LedgerRow(key=key, bureau=bureau))
        row.issued += 1
        deadline = as_utc(notice.deadline)
        rectified_at = first_reached.get((notice.id, NoticeState.RECTIFIED.value))
        if (
            NoticeState(notice.state) in OPEN_STATES
            and NoticeState(notice.state) is not NoticeState.RECTIFIED
        ):
            row.open += 1
        if rectified_at is not None:
            row.rectified += 1
            row.hours_to_rectify_total += (
                rectified_at - as_utc(notice.issued_at)
            ).total_seconds() / 3600
            row.on_time += rectified_at <= deadline
        went_overdue = (notice.id, NoticeState.OVERDUE.value) in first_reached
        if went_overdue or (rectified_at is None and deadline < now):
            row.overdue += 1
        if rectified_at is not None or deadline < now or went_overdue:
            row.due += 1
    return sorted(
        rows.values(),
        key=lambda r: (
            -(r.on_time_rate if r.on_time_rate is not None else -1.0),
            r.average_hours_to_rectify or 1e9,
            r.key,
        ),
    )


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
