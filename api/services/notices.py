"""Findings in, notices out: rules, one open notice per site and class, audited transitions."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import shapely
from shapely.geometry import shape
from sqlalchemy import Select, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only
from sqlalchemy.orm.attributes import set_committed_value

from api.db import as_utc, optimize, write_turn
from api.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from api.models.bureaus import Bureau
from api.models.flights import Flight
from api.models.notices import (
    OPEN_NOTICE_CONDITION,
    OPEN_STATES,
    UNSETTLED_CONDITION,
    Finding,
    FindingClass,
    FindingPublic,
    FindingReview,
    FindingsIngested,
    Notice,
    NoticeCounter,
    NoticeEvent,
    NoticeEventPublic,
    NoticePhoto,
    NoticePhotoPublic,
    NoticePublic,
    NoticeState,
    NoticeSummary,
)
from api.models.sites import Site
from api.models.users import Role, User
from api.services import ledger
from api.services.evidence import evidence_url, pixel_box
from api.services.frames import validate_jpeg
from api.services.webhooks import announce
from dustpatrol.settings import Settings
from dustpatrol.storage import MissingObjectError, content_key, open_storage

CLASS_NAMES = {
    FindingClass.EXPOSED_SOIL.value: ("裸露土方", "exposed soil"),
    FindingClass.ROAD_DUST.value: ("道路积尘", "road dust"),
}
S = NoticeState
ALLOWED: dict[NoticeState, frozenset[NoticeState]] = {
    S.ISSUED: frozenset({S.ACKNOWLEDGED, S.RECTIFIED, S.OVERDUE, S.REJECTED}),
    S.ACKNOWLEDGED: frozenset({S.RECTIFIED, S.OVERDUE, S.REJECTED}),
    S.OVERDUE: frozenset({S.ACKNOWLEDGED, S.RECTIFIED, S.ESCALATED, S.REJECTED}),
    S.ESCALATED: frozenset({S.RECTIFIED, S.REJECTED}),
    S.RECTIFIED: frozenset({S.VERIFIED, S.ACKNOWLEDGED, S.REJECTED}),  # back when proof fails
    S.VERIFIED: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
    S.REJECTED: frozenset(),
}
BUREAU_MAY = frozenset({S.ACKNOWLEDGED, S.RECTIFIED})


def local_time(moment: datetime, settings: Settings) -> str:
    """``moment`` as the bureau reads it: local time of ``notices.timezone``."""
    return as_utc(moment).astimezone(ZoneInfo(settings.notices.timezone)).strftime("%Y-%m-%d %H:%M")


def _fingerprint(
    flight_id: int, site_id: str | None, finding_class: str, geometry: dict[str, Any]
) -> str:
    canonical = json.dumps([flight_id, site_id, finding_class, geometry], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def ingest(
    session: Session, settings: Settings, flight_id: int, collection: dict[str, Any]
) -> FindingsIngested:
    """Store the pipeline's findings (``geo.matching.findings_geojson``); posting the same
    analysis again changes nothing, also when two posts of it race (the loser finds the
    winner's findings and reports them unchanged). Without required confirmation, rules run
    at once."""
    with write_turn(session):
        try:
            return _ingest(session, settings, flight_id, collection)
        except IntegrityError:
            _roll_back(session)
            return _ingest(session, settings, flight_id, collection)


def _ingest(
    session: Session, settings: Settings, flight_id: int, collection: dict[str, Any]
) -> FindingsIngested:
    # Whether the flight exists, not the flight: its plan (every waypoint) is not needed here.
    if session.scalar(select(Flight.id).where(Flight.id == flight_id)) is None:
        raise NotFoundError(f"no flight {flight_id}")
    if collection.get("type") != "FeatureCollection" or not isinstance(
        collection.get("features"), list
    ):
        raise InvalidInputError("the body must be a GeoJSON FeatureCollection of findings")
    sites, bureaus = _sites_named(session, collection["features"])
    created, unchanged = 0, 0
    unknown: set[str] = set()
    issued: list[Notice] = []
    findings = [
        _finding_from_feature(flight_id, index, feature, sites, unknown)
        for index, feature in enumerate(collection["features"])
    ]
    stored = _stored_fingerprints(session, [f.fingerprint for f in findings])
    for finding in findings:
        if finding.fingerprint in stored:  # posted before (or twice in this collection)
            unchanged += 1
            continue
        stored.add(finding.fingerprint)
        # The rules first, the finding's insert after: it is written with its notice (one
        # statement, not an insert and then an update).
        _issue_unconfirmed(session, settings, finding, issued)
        session.add(finding)
        created += 1
    session.flush()
    verify_with_flight(session, settings, flight_id)
    _number_issued(session, settings, bureaus)
    session.commit()
    return FindingsIngested(
        created=created,
        unchanged=unchanged,
        unknown_sites=sorted(unknown),
        notices_issued=[notice.number for notice in issued],
    )


def sync_flight(
    session: Session,
    settings: Settings,
    flight_id: int,
    collection: dict[str, Any],
    *,
    final: bool,
) -> FindingsIngested:
    """The service's own analysis of a flight, of the frames so far (during the flight) or of
    all of them (``final``): the flight's findings made by the service become those of
    ``collection`` (findings a client posted for the flight are left alone). A stored
    finding of the same site and class that overlaps a new one is that finding, updated in
    place (its id, review and notice stay: a patch seen by more frames grows, it is not found
    again); new ones are added; unreviewed ones without a notice that the analysis no longer
    has (merged into a neighbour, or outvoted by later frames) are removed. The rules run on
    every finding without a notice; rectified notices are verified against the flight when
    it is final. Runs of the same flight take turns (the flight's row is locked)."""
    with write_turn(session):
        flight = session.scalar(
            select(Flight)
            .options(load_only(Flight.id, Flight.completed_at))  # not its plan
            .where(Flight.id == flight_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if flight is None:
            raise NotFoundError(f"no flight {flight_id}")
        if not final and flight.completed_at is not None:  # the final run has it now
            session.rollback()
            return FindingsIngested(created=0, unchanged=0, unknown_sites=[], notices_issued=[])
        sites, bureaus = _sites_named(session, collection["features"])
        unknown: set[str] = set()
        fresh = [
            _finding_from_feature(flight_id, index, feature, sites, unknown)
            for index, feature in enumerate(collection["features"])
        ]
        flight_findings = list(
            session.scalars(select(Finding).where(Finding.flight_id == flight_id))
        )
        stored = [f for f in flight_findings if f.origin == "service"]
        posted = {f.fingerprint for f in flight_findings if f.origin != "service"}
        kept: set[int] = set()
        created, unchanged = 0, 0
        touched: list[Finding] = []
        for finding in fresh:
            if finding.fingerprint in posted:  # a client posted this very finding: it is theirs
                unchanged += 1
                continue
            same = _same_patch(finding, [f for f in stored if f.id not in kept])
            if same is None:
                finding.origin = "service"
                session.add(finding)
                touched.append(finding)
                created += 1
                continue
            kept.add(same.id)
            if same.fingerprint == finding.fingerprint:
                unchanged += 1
            else:
                for name in ("fingerprint", "geometry_geojson", "area_m2", "confidence",
                             "uncertainty_m", "evidence"):  # fmt: skip
                    setattr(same, name, getattr(finding, name))
            touched.append(same)
        for gone in stored:
            # A finding with a notice is that notice's evidence: it stays, even when frames
            # that came later outvoted it (see `geo.vote`); an analyst can reject it. Unless
            # later frames merged it into a neighbour with the same notice: that one is the
            # notice's evidence now, and the two would overlap (one patch found twice).
            if (
                gone.id not in kept
                and gone.review == FindingReview.PENDING.value
                and (gone.notice_id is None or _absorbed(gone, touched))
            ):
                session.delete(gone)
        session.flush()
        issued: list[Notice] = []
        for finding in touched:
            if finding.notice_id is None:
                _issue_unconfirmed(session, settings, finding, issued)
        session.flush()
        if final:
            verify_with_flight(session, settings, flight_id)
        _number_issued(session, settings, bureaus)
        session.commit()
    return FindingsIngested(
        created=created,
        unchanged=unchanged,
        unknown_sites=sorted(unknown),
        notices_issued=[notice.number for notice in issued],
    )


def _stored_fingerprints(session: Session, fingerprints: list[str]) -> set[str]:
    """Which of ``fingerprints`` are stored findings: a query per 500, not one per finding."""
    stored: set[str] = set()
    unique = sorted(set(fingerprints))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        stored.update(
            session.scalars(select(Finding.fingerprint).where(Finding.fingerprint.in_(chunk)))
        )
    return stored


def _sites_named(
    session: Session, features: list[Any]
) -> tuple[dict[str, Site], dict[int, Bureau]]:
    """The registered sites the features name (by ``properties.site_id``; malformed features
    are left to `_finding_from_feature` to refuse), and their bureaus, read with them (the
    notices issued on those sites need to know whether a bureau has a webhook)."""
    named = {
        f["properties"]["site_id"]
        for f in features
        if isinstance(f, dict)
        and isinstance(f.get("properties"), dict)
        and isinstance(f["properties"].get("site_id"), str)
    }
    sites: dict[str, Site] = {}
    bureaus: dict[int, Bureau] = {}
    rows = session.execute(
        select(Site, Bureau)
        .outerjoin(Bureau, Bureau.id == Site.bureau_id)
        .where(Site.site_id.in_(sorted(named)))
    )
    for site, bureau in rows:
        sites[site.site_id] = site
        if bureau is not None:
            bureaus[bureau.id] = bureau
    return sites, bureaus


def _issue_unconfirmed(
    session: Session, settings: Settings, finding: Finding, issued: list[Notice]
) -> None:
    """Without required confirmation the rules run at once; a notice they issue or attach the
    finding to is added to ``issued`` (once)."""
    if settings.notices.require_confirmation:
        return
    notice = apply_rules(session, settings, finding, actor=None)
    if notice is not None and all(notice is not known for known in issued):
        issued.append(notice)


def _absorbed(gone: Finding, touched: list[Finding]) -> bool:
    """Whether a finding of this analysis with the same site, class and notice as ``gone``
    overlaps it: later frames saw ``gone`` as part of that larger patch."""
    outline = shape(json.loads(gone.geometry_geojson))
    return any(
        t.notice_id == gone.notice_id
        and t.site_id == gone.site_id
        and t.finding_class == gone.finding_class
        and outline.intersection(shape(json.loads(t.geometry_geojson))).area > 0
        for t in touched
    )


def _same_patch(finding: Finding, stored: list[Finding]) -> Finding | None:
    """The stored finding ``finding`` is a later view of: same site and class, the same
    fingerprint, else of those it overlaps one with a notice (a notice's finding stays
    whatever later frames say, so a patch that took it in must be it, or the two would
    overlap), else the one it overlaps most."""
    candidates = [
        f
        for f in stored
        if f.site_id == finding.site_id and f.finding_class == finding.finding_class
    ]
    for candidate in candidates:
        if candidate.fingerprint == finding.fingerprint:
            return candidate
    outline = shape(json.loads(finding.geometry_geojson))
    best, best_key = None, (False, 0.0)
    for candidate in candidates:
        overlap = outline.intersection(shape(json.loads(candidate.geometry_geojson))).area
        key = (candidate.notice_id is not None, overlap)
        if overlap > 0 and key > best_key:
            best, best_key = candidate, key
    return best


def _finding_from_feature(
    flight_id: int, index: int, feature: Any, sites: dict[str, Site], unknown: set[str]
) -> Finding:
    where = f"feature {index}"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidInputError(f"{where}: not a GeoJSON Feature")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        raise InvalidInputError(f"{where}: properties must be an object (class, area_m2, ...)")
    finding_class = properties.get("class")
    if not isinstance(finding_class, str) or finding_class not in {c.value for c in FindingClass}:
        raise InvalidInputError(
            f"{where}: class must be one of {', '.join(c.value for c in FindingClass)}"
        )
    if properties.get("site_id") is not None and not isinstance(properties["site_id"], str):
        raise InvalidInputError(f"{where}: site_id must be a string or null")
    try:
        geometry = shape(feature["geometry"])
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
        raise InvalidInputError(f"{where}: geometry is not a valid GeoJSON geometry") from None
    if geometry.geom_type not in ("Polygon", "MultiPolygon") or geometry.is_empty:
        raise InvalidInputError(f"{where}: a finding must be a polygon")
    if not all(math.isfinite(v) for v in geometry.bounds):
        raise InvalidInputError(f"{where}: the polygon has coordinates that are not finite")
    if not geometry.is_valid:
        raise InvalidInputError(
            f"{where}: the polygon is not valid ({shapely.is_valid_reason(geometry)}); "
            "findings are simple polygons, e.g. as geo.matching.findings_geojson writes them"
        )
    numbers = {}
    for name in ("area_m2", "confidence", "uncertainty_m"):
        value = properties.get(name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidInputError(f"{where}: {name} must be a non-negative number")
        numbers[name] = float(value)
    if numbers["confidence"] > 1:
        raise InvalidInputError(f"{where}: confidence must be within 0..1")
    site_key = properties.get("site_id")
    site = sites.get(site_key) if site_key else None
    if site_key and site is None:
        unknown.add(str(site_key))
    return Finding(
        flight_id=flight_id,
        site_id=site.id if site else None,
        bureau_id=site.bureau_id if site else None,
        fingerprint=_fingerprint(flight_id, site_key, finding_class, feature["geometry"]),
        finding_class=finding_class,
        geometry_geojson=json.dumps(feature["geometry"]),
        area_m2=numbers["area_m2"],
        confidence=numbers["confidence"],
        uncertainty_m=numbers["uncertainty_m"],
        evidence=_evidence(properties.get("evidence"), where),
    )


def _evidence(entries: Any, where: str) -> list[dict[str, Any]]:
    """The evidence list checked: each entry names a frame and a pixel box in it."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidInputError(f"{where}: evidence must be a list")
    checked = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("frame_id"), str):
            raise InvalidInputError(f"{where}: evidence {number} must name a frame_id")
        pixel_box(entry, f"{where}: evidence {number}")
        checked.append(entry)
    return checked


def apply_rules(
    session: Session, settings: Settings, finding: Finding, actor: User | None
) -> Notice | None:
    """Attach the finding to its site's open notice of that class, or issue one; None when
    the rules say no notice (compliant class, too small, too unsure, off-site)."""
    rules = settings.notices
    if finding.site_id is None or not rules.acts_on(
        finding.finding_class, finding.area_m2, finding.confidence
    ):
        return None
    notice = session.scalar(
        select(Notice).where(
            Notice.site_id == finding.site_id,
            Notice.finding_class == finding.finding_class,
            Notice.state.in_([s.value for s in OPEN_STATES]),
        )
    )
    if notice is None:
        notice = _issue(session, settings, finding, actor)
    finding.notice_id = notice.id
    finding.bureau_id = notice.bureau_id
    return notice


def _issue(session: Session, settings: Settings, finding: Finding, actor: User | None) -> Notice:
    site = session.get(Site, finding.site_id)
    assert site is not None
    now = datetime.now(UTC)
    hours = settings.notices.deadline_hours[finding.finding_class]
    deadline = now + timedelta(hours=hours)
    zh, en = CLASS_NAMES[finding.finding_class]
    name = site.name or site.site_id
    local_deadline = local_time(deadline, settings)
    notice = Notice(
        number=f"~{uuid.uuid4().hex[:29]}",  # provisional: `_number_issued` numbers it
        site_id=site.id,
        bureau_id=site.bureau_id,
        finding_class=finding.finding_class,
        state=NoticeState.ISSUED.value,
        text_zh=(
            f"{name}（{site.site_id}）经无人机巡查发现{zh}约{finding.area_m2:.0f}平方米，"
            f"请于{local_deadline}前完成整改并上传整改照片。"
        ),
        text_en=(
            f"The drone patrol found about {finding.area_m2:.0f} m² of {en} at {name} "
            f"({site.site_id}); rectify it and upload photos by {local_deadline}."
        ),
        issued_at=now,
        deadline=deadline,
        rectified_at=None,
        went_overdue=False,
        deadline_missed=False,
    )
    session.add(notice)
    session.flush()
    # Its first event names the finding, which may not be written yet (`ingest` writes a
    # finding after the rules, with its notice): `_number_issued` records it.
    session.info.setdefault(_UNNUMBERED, []).append((notice, finding, actor))
    return notice


_UNNUMBERED = "dustpatrol.unnumbered_notices"


def _number_issued(
    session: Session, settings: Settings, bureaus: Mapping[int, Bureau] | None = None
) -> None:
    """Number the notices issued in this transaction, record their first event, add their
    shares to the ledger and queue their webhook messages: the last writes before the
    commit. The series' counter row and the bureau's ledger total are the rows every
    concurrent issue waits on, so they are locked here, for the commit's round trip, not
    from the first notice through the rest of the request (findings, rules, the flight's
    verification). ``bureaus`` (read earlier, by id) spares reading a bureau to learn it has
    no webhook."""
    pending: list[tuple[Notice, Finding, User | None]] = session.info.pop(_UNNUMBERED, [])
    if not pending:
        return
    if any(finding.id is None for _, finding, _ in pending):
        session.flush()  # the findings written, so that the events can name them
    for notice, finding, actor in pending:
        session.add(
            NoticeEvent(
                notice_id=notice.id,
                from_state=None,
                to_state=NoticeState.ISSUED.value,
                actor_id=actor.id if actor else None,
                note=f"issued from finding {finding.id}",
                at=notice.issued_at,
            )
        )
    session.flush()  # the events too, before the rows concurrent issues wait on
    for notice, _, _ in pending:
        series = f"{settings.notices.number_prefix}-{as_utc(notice.issued_at).year}"
        notice.number = _next_number(session, series)
        ledger.account(session, notice.site_id, notice.bureau_id, None, _ledger_share(notice))
        known = (bureaus or {}).get(notice.bureau_id or 0)
        if known is None or known.webhook_url:
            site = session.get(Site, notice.site_id)
            announce(session, notice.bureau_id, "notice.issued", _webhook_payload(notice, site))
    session.flush()


def _roll_back(session: Session) -> None:
    """Roll back, forgetting the notices the transaction issued (they are gone with it)."""
    session.rollback()
    session.info.pop(_UNNUMBERED, None)


def _ledger_share(notice: Notice) -> dict[str, float]:
    return ledger.contribution(
        notice.state,
        notice.issued_at,
        notice.deadline,
        notice.rectified_at,
        notice.went_overdue,
        notice.deadline_missed,
    )


def get_finding(session: Session, user: User, finding_id: int) -> Finding:
    """The finding, if ``user`` may see it: a bureau sees the findings that are its business
    (see `visible_findings`), also after their site moved to another bureau."""
    finding = session.get(Finding, finding_id)
    if finding is None or (user.role == Role.BUREAU and finding.bureau_id != user.bureau_id):
        raise NotFoundError(f"no finding {finding_id}")
    return finding


def visible_findings(user: User) -> Select[Finding]:
    """Findings ``user`` may see: staff every one, a bureau those of its notices and, without a
    notice, those found on its sites while they were its (never another bureau's, whatever
    site they are on now)."""
    query = select(Finding).order_by(Finding.id)
    if user.role == Role.BUREAU:
        query = query.where(Finding.bureau_id == user.bureau_id)
    return query


def _next_number(session: Session, series: str) -> str:
    """The next number of ``series`` (``GX-2026-000124``): one upsert that creates the
    counter row at 1 or increments it, and returns the value. The row stays locked until the
    transaction ends, so two concurrent issues can never get the same number."""
    connection = session.connection()  # a plain statement, not the ORM's bulk-insert path
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    statement = insert(NoticeCounter).values(series=series, last=1)
    last = connection.execute(
        statement.on_conflict_do_update(
            index_elements=[NoticeCounter.series], set_={"last": NoticeCounter.last + 1}
        ).returning(NoticeCounter.last)
    ).scalar_one()
    return f"{series}-{last:06d}"


def review(
    session: Session, settings: Settings, finding_id: int, confirm: bool, user: User
) -> FindingPublic:
    """Confirm or reject a pending finding, as a compare-and-set on its review (two analysts
    deciding at once: one wins, the other gets 409). A notice issued by a concurrent request
    for the same site and class makes the database refuse ours; then the finding joins that
    one."""
    try:
        return _review(session, settings, finding_id, confirm, user)
    except IntegrityError:
        _roll_back(session)
        return _review(session, settings, finding_id, confirm, user)


def _review(
    session: Session, settings: Settings, finding_id: int, confirm: bool, user: User
) -> FindingPublic:
    finding = get_finding(session, user, finding_id)
    decided = (FindingReview.CONFIRMED if confirm else FindingReview.REJECTED).value
    claimed = session.execute(
        update(Finding)
        .where(Finding.id == finding.id, Finding.review == FindingReview.PENDING.value)
        .values(review=decided)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        now = session.scalar(select(Finding.review).where(Finding.id == finding.id))
        raise ConflictError(f"finding {finding_id} was already {now}")
    set_committed_value(finding, "review", decided)
    if confirm:
        apply_rules(session, settings, finding, actor=user)
        _number_issued(session, settings)
    session.commit()
    return finding_public(session, finding)


def finding_public(session: Session, finding: Finding) -> FindingPublic:
    site = session.get(Site, finding.site_id) if finding.site_id else None
    notice = session.get(Notice, finding.notice_id) if finding.notice_id else None
    return FindingPublic(
        id=finding.id,
        flight_id=finding.flight_id,
        site=site.site_id if site else None,
        finding_class=finding.finding_class,
        area_m2=finding.area_m2,
        confidence=finding.confidence,
        uncertainty_m=finding.uncertainty_m,
        review=finding.review,
        notice=notice.number if notice else None,
        evidence=[
            {**entry, "image": evidence_url(finding.id, index)}
            for index, entry in enumerate(finding.evidence)
        ],
        origin=finding.origin,
    )


def visible_notices(user: User) -> Select[Notice]:
    query = select(Notice).order_by(Notice.id)
    if user.role == Role.BUREAU:
        query = query.where(Notice.bureau_id == user.bureau_id)
    return query


def _cursor_id(cursor: str) -> int:
    try:
        kind, _, value = base64.urlsafe_b64decode(cursor.encode() + b"==").decode().partition(":")
        if kind != "n":
            raise ValueError(kind)
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError(
            "cursor is not one this server gave out: use the next link of the previous page"
        ) from None


def _cursor(notice_id: int) -> str:
    return base64.urlsafe_b64encode(f"n:{notice_id}".encode()).decode().rstrip("=")


def list_notices(
    session: Session,
    user: User,
    *,
    state: NoticeState | None = None,
    open_only: bool = False,
    site: str | None = None,
    finding_class: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[NoticeSummary], str | None]:
    """One page of the notices ``user`` may see, oldest first, and the cursor of the next page
    (None on the last). Keyset paging: a page costs the same however deep it is."""
    filters = {
        "bureau_id": user.bureau_id if user.role == Role.BUREAU else None,
        "state": state.value if state is not None else None,
        "site": site or None,
        "finding_class": finding_class or None,
        "after": _cursor_id(cursor) if cursor else None,
    }
    given = (open_only, *(value is not None for value in filters.values()))
    parameters = {name: value for name, value in filters.items() if value is not None}
    # Through the session's connection (Core): plain rows, without the ORM's loading step
    # (a tenth of a page's CPU on SQLite, measured in process).
    bound = {**parameters, "rows": limit + 1}
    rows = session.connection().execute(_list_statement(given), bound).all()
    # Unpacked by position, in the statement's column order: a row's attribute lookup by
    # name cost a page of 50 a fifth of a millisecond (measured in process).
    page: list[NoticeSummary] = [
        {
            "number": number,
            "site": site_id,
            "site_name": site_name,
            "bureau": bureau,
            "finding_class": kind,
            "state": notice_state,
            "issued_at": issued_at,
            "deadline": deadline,
        }
        for _, number, site_id, site_name, bureau, kind, notice_state, issued_at, deadline in rows[
            :limit
        ]
    ]
    following = _cursor(rows[limit - 1].id) if len(rows) > limit else None
    return page, following


@functools.cache
def _list_statement(given: tuple[bool, ...]) -> Select[*tuple[Any, ...]]:
    """The list's statement for one combination of filters, built once and reused with
    bound values (building and keying a statement costs as much as running this one)."""
    open_only, bureau, state, site, finding_class, after = given
    # Only the columns a list shows (never the notice texts).
    query = (
        select(
            Notice.id,
            Notice.number,
            Site.site_id.label("site"),
            Site.name.label("site_name"),
            Bureau.name.label("bureau"),
            Notice.finding_class,
            Notice.state,
            Notice.issued_at,
            Notice.deadline,
        )
        .join(Site, Notice.site_id == Site.id)
        .outerjoin(Bureau, Notice.bureau_id == Bureau.id)
        .order_by(Notice.id)
        .limit(bindparam("rows"))
    )
    if bureau:
        query = query.where(Notice.bureau_id == bindparam("bureau_id"))
    if state:
        query = query.where(Notice.state == bindparam("state"))
    if open_only:
        # Spelled as the partial indexes' condition, literally: SQLite uses a partial index
        # only for a query whose WHERE contains the index's own condition.
        query = query.where(text(f"notices.{OPEN_NOTICE_CONDITION}"))
    if site:
        query = query.where(Site.site_id == bindparam("site"))
    if finding_class:
        query = query.where(Notice.finding_class == bindparam("finding_class"))
    if after:
        query = query.where(Notice.id > bindparam("after"))
    return query


def get_notice(session: Session, user: User, number: str) -> Notice:
    notice = session.scalar(visible_notices(user).where(Notice.number == number))
    if notice is None:
        raise NotFoundError(f"no notice {number!r}")
    return notice


def transition(
    session: Session,
    settings: Settings,
    user: User,
    number: str,
    to: NoticeState,
    note: str | None,
    attachments: list[str],
) -> Notice:
    """Move a notice to ``to`` if the lifecycle and the user's role allow it (409 / 403)."""
    notice = get_notice(session, user, number)
    current = NoticeState(notice.state)
    if to not in ALLOWED[current]:
        raise ConflictError(f"notice {number} cannot go from {current.value} to {to.value}")
    refusal = _refusal(Role(user.role), current, to)
    if refusal:
        raise ForbiddenError(refusal)
    if to is S.RECTIFIED and not attachments and settings.notices.rectification_photo_required:
        raise InvalidInputError(
            f"reporting notice {number} rectified needs a photo of the site: upload it with "
            f"POST /notices/{number}/photos and name its sha256 in attachments"
        )
    uploaded = set(
        session.scalars(select(NoticePhoto.sha256).where(NoticePhoto.notice_id == notice.id))
    )
    for attachment in attachments:
        if attachment not in uploaded:
            raise InvalidInputError(
                f"attachment {attachment!r} is not a photo of notice {number}: upload it with "
                f"POST /notices/{number}/photos and attach the sha256 it returns"
            )
    if not _record(session, notice, to, note, actor=user, attachments=attachments):
        session.rollback()
        now = session.scalar(select(Notice.state).where(Notice.id == notice.id))
        raise ConflictError(
            f"notice {number} changed while this request was checked (it is {now} now, "
            f"not {current.value}): reload it and decide again"
        )
    session.commit()
    return notice


def _refusal(role: Role, current: NoticeState, to: NoticeState) -> str:
    """Why ``role`` may not make this transition, or "" when it may."""
    if role is Role.ADMIN:
        return ""
    if role is Role.BUREAU:
        if to not in BUREAU_MAY or current is S.RECTIFIED:
            return "a bureau acknowledges its notices and reports their rectification, nothing else"
        return ""
    if role is Role.ANALYST:
        if to is S.RECTIFIED or (to is S.ACKNOWLEDGED and current is not S.RECTIFIED):
            return "acknowledging and reporting rectification is the responsible bureau's part"
        return ""
    return "inspectors do not change notices"


def notice_public(session: Session, notice: Notice) -> NoticePublic:
    site = session.get(Site, notice.site_id)
    bureau = session.get(Bureau, notice.bureau_id) if notice.bureau_id else None
    findings = session.scalars(
        select(Finding.id).where(Finding.notice_id == notice.id).order_by(Finding.id)
    )
    events = session.scalars(
        select(NoticeEvent).where(NoticeEvent.notice_id == notice.id).order_by(NoticeEvent.id)
    )
    return NoticePublic(
        number=notice.number,
        site=site.site_id if site else "",
        bureau=bureau.name if bureau else None,
        finding_class=notice.finding_class,
        state=notice.state,
        text_zh=notice.text_zh,
        text_en=notice.text_en,
        issued_at=notice.issued_at,
        deadline=notice.deadline,
        findings=list(findings),
        events=[NoticeEventPublic.model_validate(e) for e in events],
    )


VERIFY_MIN_COVERAGE = 0.9  # share of the site the flight's frames must have seen


def _webhook_payload(notice: Notice, site: Site | None) -> dict[str, Any]:
    return {
        "notice": notice.number,
        "site": site.site_id if site else None,
        "class": notice.finding_class,
        "state": notice.state,
        "deadline": notice.deadline.isoformat(),
        "text_zh": notice.text_zh,
        "text_en": notice.text_en,
    }


def _record(
    session: Session,
    notice: Notice,
    to: NoticeState,
    note: str | None,
    *,
    actor: User | None = None,
    attachments: list[str] | None = None,
) -> bool:
    """Move ``notice`` from the state it was read in to ``to``, as a compare-and-set: the
    UPDATE names the state it expects, so a transition that another request made since the
    read (and its check) lands nowhere and this returns False, writing nothing. On success
    the audit event (by ``actor``, or the system when None) and the bureau's webhook message
    are added in the caller's transaction; the row stays locked until it ends."""
    expected = notice.state
    now = datetime.now(UTC)
    for _attempt in range(2):
        if _compare_and_set(
            session,
            notice,
            state=to.value,
            rectified_at=notice.rectified_at or (now if to is NoticeState.RECTIFIED else None),
            went_overdue=notice.went_overdue or to is NoticeState.OVERDUE,
        ):
            break
        # Only the housekeeping's deadline flag changed meanwhile: read it and try again.
        session.refresh(notice, ["state", "rectified_at", "went_overdue", "deadline_missed"])
        if notice.state != expected:
            return False
    else:
        return False
    session.add(
        NoticeEvent(
            notice_id=notice.id,
            from_state=expected,
            to_state=to.value,
            actor_id=actor.id if actor else None,
            note=note,
            attachments=attachments or [],
            at=now,
        )
    )
    announce(
        session,
        notice.bureau_id,
        f"notice.{to.value}",
        _webhook_payload(notice, session.get(Site, notice.site_id)),
    )
    return True


def _compare_and_set(session: Session, notice: Notice, **values: Any) -> bool:
    """Write ``values`` to ``notice`` if the row is still as it was read (its state, and the
    housekeeping's deadline flag its ledger share was computed with), and move that share of
    the ledger totals in the same transaction; False, writing nothing, when another writer
    changed it meanwhile. The row stays locked until the transaction ends."""
    before = _ledger_share(notice)
    moved = session.execute(
        update(Notice)
        .where(
            Notice.id == notice.id,
            Notice.state == notice.state,
            Notice.deadline_missed.is_(notice.deadline_missed),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return False
    for name, value in values.items():
        set_committed_value(notice, name, value)
    ledger.account(session, notice.site_id, notice.bureau_id, before, _ledger_share(notice))
    return True


def verify_with_flight(session: Session, settings: Settings, flight_id: int) -> list[str]:
    """Check rectified notices against a later flight: if its frames saw (nearly) the whole
    site and found no problem of the notice's class there, the notice is verified; if they
    found one, it goes back to the bureau (acknowledged). A problem is judged by the rules
    that issue notices (minimum area and confidence): what would not have issued the notice
    does not reopen it. Returns the notices touched."""
    from api.services.coverage import in_view, seen_by, site_coverage_share

    rules = settings.notices
    seen_lonlat = seen_by(session, flight_id)
    if seen_lonlat is None:
        return []
    touched = []
    # Only the rectified notices of sites the frames may have seen, read with their sites:
    # not every rectified notice of the registry, each with its site.
    rectified = (
        select(Notice, Site)
        .join(Site, Site.id == Notice.site_id)
        .where(
            Notice.state == NoticeState.RECTIFIED.value,
            in_view(session, flight_id, seen_lonlat),
        )
        .order_by(Notice.id)
    )
    for notice, site in session.execute(rectified).all():
        coverage = site_coverage_share(site, seen_lonlat)
        if coverage < VERIFY_MIN_COVERAGE:
            continue
        seen = session.scalars(
            select(Finding)
            .where(
                Finding.flight_id == flight_id,
                Finding.site_id == site.id,
                Finding.finding_class == notice.finding_class,
                Finding.review != FindingReview.REJECTED.value,
            )
            .order_by(Finding.area_m2.desc())
        ).all()
        finding = next(
            (f for f in seen if rules.acts_on(f.finding_class, f.area_m2, f.confidence)), None
        )
        if finding is None:
            moved = _record(
                session,
                notice,
                NoticeState.VERIFIED,
                f"flight {flight_id} saw {coverage:.0%} of the site: no {notice.finding_class}",
            )
        else:
            moved = _record(
                session,
                notice,
                NoticeState.ACKNOWLEDGED,
                f"flight {flight_id} found {notice.finding_class} again (finding {finding.id})",
            )
            if moved:
                finding.notice_id = notice.id
                finding.bureau_id = notice.bureau_id
        if moved:  # else someone moved it meanwhile: their transition stands
            touched.append(notice.number)
    return touched


def mark_overdue(session: Session, settings: Settings, now: datetime | None = None) -> list[str]:
    """Open notices past their deadline become overdue; overdue ones escalate after
    ``notices.escalate_after_hours`` more. Returns the notices changed."""
    now = now or datetime.now(UTC)
    changed = []
    waiting = [NoticeState.ISSUED.value, NoticeState.ACKNOWLEDGED.value]
    due = select(Notice).where(Notice.state.in_(waiting), Notice.deadline < now)
    for notice in session.scalars(due.order_by(Notice.id)).all():
        if _record(
            session,
            notice,
            NoticeState.OVERDUE,
            f"deadline {notice.deadline:%Y-%m-%d %H:%M} UTC passed",
        ):
            changed.append(notice.number)
    escalate_at = timedelta(hours=settings.notices.escalate_after_hours)
    late = select(Notice).where(
        Notice.state == NoticeState.OVERDUE.value, Notice.deadline < now - escalate_at
    )
    for notice in session.scalars(late.order_by(Notice.id)).all():
        if _record(
            session,
            notice,
            NoticeState.ESCALATED,
            f"overdue for more than {settings.notices.escalate_after_hours:g} h",
        ):
            changed.append(notice.number)
    session.commit()
    return changed


def settle_deadlines(session: Session, now: datetime | None = None, batch: int = 1000) -> int:
    """Mark the notices whose deadline passed unrectified, in states `mark_overdue` does not
    move (e.g. closed), so the ledger counts them from its totals rather than at every read.
    A compare-and-set on the state, like every change of a notice; returns how many."""
    now = now or datetime.now(UTC)
    marked = 0
    while True:
        due = session.scalars(
            select(Notice)
            .where(text(UNSETTLED_CONDITION), Notice.deadline < now)
            .order_by(Notice.id)
            .limit(batch)
            .execution_options(populate_existing=True)  # as they are now, not as last read
        ).all()
        settled = sum(_compare_and_set(session, notice, deadline_missed=True) for notice in due)
        session.commit()
        marked += settled
        # A full batch of which none could be settled (all changed meanwhile): next round.
        if len(due) < batch or not settled:
            return marked


OPTIMIZE_EVERY_S = 3600.0
_next_optimize = [0.0]


def housekeeping(session: Session, settings: Settings) -> None:
    """Periodic work of the job worker: deadlines (webhooks have their own dispatcher), and
    hourly the query planner's statistics."""
    mark_overdue(session, settings)
    settle_deadlines(session)
    if time.monotonic() >= _next_optimize[0]:
        _next_optimize[0] = time.monotonic() + OPTIMIZE_EVERY_S
        optimize(session)


def photo_key(sha256: str) -> str:
    """Where a rectification photo with this content hash is stored."""
    return content_key("photos", sha256)


def photo_public(number: str, photo: NoticePhoto) -> NoticePhotoPublic:
    return NoticePhotoPublic(
        sha256=photo.sha256,
        filename=photo.filename,
        size_bytes=photo.size_bytes,
        at=photo.at,
        url=f"/notices/{number}/photos/{photo.sha256}",
    )


def add_photo(
    session: Session, settings: Settings, user: User, number: str, data: bytes, filename: str
) -> NoticePhotoPublic:
    """Store a JPEG for the notice (idempotent by content); a bureau adds photos to its own
    notices, staff to any; inspectors do not change notices."""
    notice = get_notice(session, user, number)
    if user.role == Role.INSPECTOR:
        raise ForbiddenError("inspectors do not change notices")
    validate_jpeg(data, filename)
    digest = hashlib.sha256(data).hexdigest()
    photo = session.scalar(
        select(NoticePhoto).where(NoticePhoto.notice_id == notice.id, NoticePhoto.sha256 == digest)
    )
    if photo is None:
        open_storage(settings).put_once(photo_key(digest), data)
        photo = NoticePhoto(
            notice_id=notice.id,
            sha256=digest,
            filename=filename[:300],
            size_bytes=len(data),
            uploaded_by=user.id,
        )
        session.add(photo)
        session.commit()
    return photo_public(notice.number, photo)


def get_photo(session: Session, settings: Settings, user: User, number: str, sha256: str) -> bytes:
    notice = get_notice(session, user, number)
    photo = session.scalar(
        select(NoticePhoto).where(NoticePhoto.notice_id == notice.id, NoticePhoto.sha256 == sha256)
    )
    if photo is None:
        raise NotFoundError(f"notice {number} has no photo {sha256!r}")
    try:
        return open_storage(settings).get(photo_key(sha256))
    except MissingObjectError:
        raise NotFoundError(f"the stored file of photo {sha256} is missing") from None
