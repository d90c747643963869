"""Detection in the service: the same pipeline as `dustpatrol analyze`, frame by frame as
they are uploaded, then findings and notices when the flight is complete.

- ``frame_detect`` (after the metadata job): quality checks, detection at the analysis
  resolution, each detection placed on the ground and stored as an `Observation`.
- ``flight_so_far`` (after a frame with detections, while the flight is not complete; one
  waiting at a time per flight): the observations so far matched and merged into findings,
  so findings and notices appear during the flight; a patch seen again later grows in place.
- ``flight_findings`` (after ``POST /flights/{id}/complete``): waits for the flight's frames,
  then matches and merges all observations into the final findings (rules, notices,
  verification of rectified notices).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
from pyproj import CRS
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ConflictError, NotFoundError
from api.jobs import PermanentJobError, enqueue, handler
from api.models.flights import Flight, Frame, Job, JobState, Observation
from api.models.sites import Site
from api.services.frames import FRAME_DETECT_JOB, frame_file
from api.services.notices import sync_flight
from dustpatrol.errors import DustpatrolError
from dustpatrol.pipeline import FlightAnalyzer, match_and_merge, shared_detector
from dustpatrol.settings import Settings
from geo.crs import WGS84, transform_geometry, utm_crs_for
from geo.matching import Observation as GroundObservation
from geo.matching import findings_geojson

FLIGHT_FINDINGS_JOB = "flight_findings"
FLIGHT_SO_FAR_JOB = "flight_so_far"
WAIT_FOR_FRAMES_S = 2.0


def sites_frame(session: Session) -> gpd.GeoDataFrame:
    """Every registered site as a GeoDataFrame in lon/lat (what the pipeline matches to)."""
    rows = list(session.execute(select(Site.site_id, Site.geometry_geojson)))
    return gpd.GeoDataFrame(
        {"site_id": [r.site_id for r in rows]},
        geometry=gpd.GeoSeries([shape(json.loads(r.geometry_geojson)) for r in rows], crs=WGS84),
    )


@handler(FRAME_DETECT_JOB)
def detect_frame(session: Session, payload: dict[str, Any], settings: Settings) -> None:
    frame = session.get(Frame, payload["frame_id"])
    if frame is None:
        raise PermanentJobError(f"frame {payload['frame_id']} no longer exists")
    try:
        detector = shared_detector(settings.detection)
    except DustpatrolError as exc:
        frame.analysis, frame.analysis_note = "rejected", f"no detector: {exc}"
        session.commit()
        raise PermanentJobError(str(exc)) from None
    analyzer = FlightAnalyzer(
        detector,
        sites_frame(session),
        target_gsd_m=settings.detection.target_gsd_m,
        tolerance_floor_m=settings.georeferencing.match_tolerance_m,
        quality=settings.quality,
        sites_only=settings.detection.sites_only,
    )
    try:
        with frame_file(settings, frame) as path:
            placed = analyzer.add_frame(path, frame.filename)
    except NotFoundError as exc:
        frame.analysis, frame.analysis_note = "rejected", str(exc)
        session.commit()
        raise PermanentJobError(str(exc)) from None
    session.query(Observation).filter(Observation.frame_id == frame.id).delete()  # a rerun
    if analyzer.rejected:
        frame.analysis, frame.analysis_note = "rejected", analyzer.rejected[0].reason
        session.commit()
        return
    assert analyzer.crs is not None
    for observation in placed:
        session.add(
            Observation(
                flight_id=frame.flight_id,
                frame_id=frame.id,
                finding_class=observation.class_name,
                geometry_geojson=json.dumps(
                    mapping(transform_geometry(observation.polygon, analyzer.crs, WGS84))
                ),
                confidence=observation.confidence,
                uncertainty_m=observation.uncertainty_m,
                pixel_box=list(observation.pixel_box),
            )
        )
    frame.analysis, frame.analysis_note = "done", f"{len(placed)} detections"
    session.commit()
    if placed and settings.detection.live_findings:
        _findings_so_far_soon(session, frame.flight_id)


def _findings_so_far_soon(session: Session, flight_id: int) -> None:
    """Queue the flight's findings-so-far unless a run of it is already waiting (frames that
    arrive meanwhile are all in that run)."""
    flight = session.get(Flight, flight_id)
    if flight is None or flight.completed_at is not None:
        return  # complete: the final run makes the findings
    waiting = session.scalars(
        select(Job.payload).where(
            Job.kind == FLIGHT_SO_FAR_JOB, Job.state == JobState.PENDING.value
        )
    ).all()
    if any(payload.get("flight_id") == flight_id for payload in waiting):
        return
    enqueue(session, FLIGHT_SO_FAR_JOB, {"flight_id": flight_id})
    session.commit()


def complete_flight(session: Session, settings: Settings, flight_id: int) -> Job:
    """The last frame is in: make the flight's findings once its frames are analysed."""
    flight = session.get(Flight, flight_id)
    if flight is None:
        raise NotFoundError(f"no flight {flight_id}")
    if not settings.detection.in_service:
        raise ConflictError(
            "this service does not detect (detection.in_service is off): analyse the frames "
            "with `dustpatrol analyze --api` instead"
        )
    flight.completed_at = flight.completed_at or datetime.now(UTC)
    job = enqueue(session, FLIGHT_FINDINGS_JOB, {"flight_id": flight_id})
    session.commit()
    return job


@handler(FLIGHT_FINDINGS_JOB, queue="notices")
def flight_findings(session: Session, payload: dict[str, Any], settings: Settings) -> None:
    flight_id = int(payload["flight_id"])
    frames = list(session.scalars(select(Frame).where(Frame.flight_id == flight_id)))
    if any(f.status == "pending" or f.analysis == "pending" for f in frames):
        # Frames still being read or analysed: look again shortly (a new job, so the wait
        # does not use up this one's attempts).
        enqueue(
            session,
            FLIGHT_FINDINGS_JOB,
            {"flight_id": flight_id},
            run_after=datetime.now(UTC) + timedelta(seconds=WAIT_FOR_FRAMES_S),
        )
        session.commit()
        return
    flight = session.get(Flight, flight_id)
    if flight is None:
        raise PermanentJobError(f"flight {flight_id} no longer exists")
    collection = _merged(session, settings, flight_id, frames)
    flight.analysed_at = datetime.now(UTC)
    if collection is None:
        session.commit()
        return
    sync_flight(session, settings, flight_id, collection, final=True)  # commits


@handler(FLIGHT_SO_FAR_JOB, queue="notices")
def flight_so_far(session: Session, payload: dict[str, Any], settings: Settings) -> None:
    """Findings (and, without required confirmation, notices) from the frames analysed so
    far, while the flight goes on: a patch seen by later frames grows in place."""
    flight_id = int(payload["flight_id"])
    flight = session.get(Flight, flight_id)
    if flight is None or flight.completed_at is not None:
        return  # gone, or complete: the final run makes the findings
    frames = list(session.scalars(select(Frame).where(Frame.flight_id == flight_id)))
    collection = _merged(session, settings, flight_id, frames)
    if collection is not None:
        sync_flight(session, settings, flight_id, collection, final=False)


def _merged(
    session: Session, settings: Settings, flight_id: int, frames: list[Frame]
) -> dict[str, Any] | None:
    """The findings GeoJSON of the flight's analysed frames (None without any)."""
    rows = list(session.scalars(select(Observation).where(Observation.flight_id == flight_id)))
    names = {f.id: f.filename for f in frames}
    analysed = [f for f in frames if f.analysis == "done" and f.footprint_geojson]
    if not analysed:
        return None
    first = analysed[0]
    assert first.lon_deg is not None and first.lat_deg is not None
    crs: CRS = utm_crs_for(first.lon_deg, first.lat_deg)
    placed = []
    for row in rows:
        polygon = transform_geometry(shape(json.loads(row.geometry_geojson)), WGS84, crs)
        if not isinstance(polygon, Polygon | MultiPolygon):
            continue
        placed.append(
            GroundObservation(
                frame_id=names[row.frame_id],
                class_name=row.finding_class,
                polygon=polygon,
                confidence=row.confidence,
                uncertainty_m=row.uncertainty_m,
                pixel_box=(row.pixel_box[0], row.pixel_box[1], row.pixel_box[2], row.pixel_box[3]),
            )
        )
    footprints = {
        f.filename: transform_geometry(shape(json.loads(f.footprint_geojson or "null")), WGS84, crs)
        for f in analysed
    }
    result = match_and_merge(
        placed,
        footprints,
        sites_frame(session),
        crs,
        settings.georeferencing.match_tolerance_m,
        vote_share=settings.georeferencing.merge_vote_share,
        vote_max_uncertainty_m=settings.georeferencing.merge_vote_max_uncertainty_m,
    )
    return findings_geojson(result.findings)
