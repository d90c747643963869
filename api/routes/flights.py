"""Flights and frames: register a flight, upload its frames, poll the jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import AdminUser, RowId, SessionDep, StaffUser
from api.errors import ConflictError, NotFoundError
from api.jobs import reschedule
from api.models.flights import (
    Flight,
    FlightCreate,
    FlightPublic,
    Frame,
    FramePublic,
    FrameUploaded,
    Job,
    JobPublic,
    JobState,
)
from api.services.analysis import complete_flight
from api.services.frames import MAX_FRAME_BYTES, frame_key, store_frame
from api.services.overlays import frame_overlay
from api.services.patrol_report import patrol_report, patrol_report_pdf
from dustpatrol.storage import MissingObjectError, open_storage

router = APIRouter(tags=["flights"])


@router.post("/flights", status_code=status.HTTP_201_CREATED)
def create_flight(body: FlightCreate, session: SessionDep, user: StaffUser) -> FlightPublic:
    flight = Flight(
        name=body.name, drone=body.drone, operator=body.operator, plan=body.plan, created_by=user.id
    )
    session.add(flight)
    session.commit()
    return FlightPublic.model_validate(flight)


@router.get("/flights")
def list_flights(session: SessionDep, _: StaffUser) -> list[FlightPublic]:
    return [
        FlightPublic.model_validate(f)
        for f in session.scalars(select(Flight).order_by(Flight.id.desc()))
    ]


@router.get("/flights/{flight_id}")
def get_flight(flight_id: RowId, session: SessionDep, _: StaffUser) -> FlightPublic:
    flight = session.get(Flight, flight_id)
    if flight is None:
        raise NotFoundError(f"no flight {flight_id}")
    return FlightPublic.model_validate(flight)


@router.post("/flights/{flight_id}/frames", status_code=status.HTTP_201_CREATED)
async def upload_frame(
    flight_id: RowId, file: UploadFile, request: Request, session: SessionDep, _: StaffUser
) -> FrameUploaded:
    """Upload one JPEG; the same content uploaded again returns the stored frame."""
    data = await file.read(MAX_FRAME_BYTES + 1)
    frame, job_id = store_frame(
        session, request.app.state.settings, flight_id, data, file.filename or "frame.jpg"
    )
    return FrameUploaded(
        frame=FramePublic.model_validate(frame), job_id=job_id, duplicate=job_id is None
    )


@router.post("/flights/{flight_id}/complete", status_code=status.HTTP_202_ACCEPTED)
def complete(flight_id: RowId, request: Request, session: SessionDep, _: StaffUser) -> JobPublic:
    """The last frame is uploaded: once the service has analysed every frame, it makes the
    flight's findings (and notices, by the rules). Poll the returned job."""
    job = complete_flight(session, request.app.state.settings, flight_id)
    return JobPublic.model_validate(job)


@router.get("/flights/{flight_id}/frames")
def list_frames(flight_id: RowId, session: SessionDep, _: StaffUser) -> list[FramePublic]:
    frames = session.scalars(select(Frame).where(Frame.flight_id == flight_id).order_by(Frame.id))
    return [FramePublic.model_validate(f) for f in frames]


def _frame(session: Session, frame_id: int) -> Frame:
    frame = session.get(Frame, frame_id)
    if frame is None:
        raise NotFoundError(f"no frame {frame_id}")
    return frame


@router.get(
    "/frames/{frame_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the frame as uploaded"}},
)
def frame_image(frame_id: RowId, request: Request, session: SessionDep, _: StaffUser) -> Response:
    frame = _frame(session, frame_id)
    storage = open_storage(request.app.state.settings)
    local = storage.local_path(frame_key(frame.sha256))
    if local is not None and local.is_file():  # streamed from disk
        return FileResponse(local, media_type="image/jpeg")
    try:
        return Response(storage.get(frame_key(frame.sha256)), media_type="image/jpeg")
    except MissingObjectError:
        raise NotFoundError(f"the stored file of frame {frame.filename} is missing") from None


@router.get(
    "/frames/{frame_id}/overlay",
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "the frame warped north-up onto its ground box; the box (west, "
            "south, east, north in degrees) is in the X-Bounds header",
            "headers": {"X-Bounds": {"schema": {"type": "string"}}},
        }
    },
)
def frame_overlay_image(
    frame_id: RowId, request: Request, session: SessionDep, _: StaffUser
) -> Response:
    """The frame as map imagery (nadir-ish frames only; an oblique one is a 422)."""
    frame = _frame(session, frame_id)
    overlay = frame_overlay(request.app.state.settings, frame)
    return Response(
        overlay.png,
        media_type="image/png",
        headers={
            "X-Bounds": ",".join(f"{v:.8f}" for v in overlay.bounds),
            "Cache-Control": "private, max-age=86400",
        },
    )


@router.get("/jobs")
def list_jobs(
    session: SessionDep,
    _: StaffUser,
    state: Annotated[JobState | None, Query(description="failed: the dead letters")] = None,
    kind: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[JobPublic]:
    """Background jobs, newest first: ``state=failed`` lists those whose every attempt failed
    (with the last error), to look into and retry."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == state.value)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return [JobPublic.model_validate(job) for job in session.scalars(query)]


@router.get("/jobs/{job_id}")
def get_job(job_id: RowId, session: SessionDep, _: StaffUser) -> JobPublic:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return JobPublic.model_validate(job)


@router.post("/jobs/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED)
def retry_job(job_id: RowId, session: SessionDep, _: AdminUser) -> JobPublic:
    """Run a failed job again (after what made it fail is fixed), with its attempts anew."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    if job.state != JobState.FAILED.value:
        raise ConflictError(f"job {job_id} is {job.state}: only a failed job can be retried")
    job.attempts = 0
    job.finished_at = None
    reschedule(session, job, datetime.now(UTC))
    session.commit()
    return JobPublic.model_validate(job)


@router.get("/flights/{flight_id}/report")
def flight_report(
    flight_id: RowId, request: Request, session: SessionDep, _: StaffUser
) -> dict[str, Any]:
    """The patrol report's data: sites inspected and not (with why), problems, areas per
    class, the previous patrol of the same sites, notices issued."""
    flight = session.get(Flight, flight_id)
    if flight is None:
        raise NotFoundError(f"no flight {flight_id}")
    return patrol_report(session, request.app.state.settings, flight)


@router.get(
    "/flights/{flight_id}/report.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "the patrol report"}},
)
def flight_report_pdf(
    flight_id: RowId, request: Request, session: SessionDep, _: StaffUser
) -> Response:
    """The patrol report (巡查专报) as a PDF in Chinese."""
    flight = session.get(Flight, flight_id)
    if flight is None:
        raise NotFoundError(f"no flight {flight_id}")
    data = patrol_report_pdf(session, request.app.state.settings, flight)
    return Response(
        data,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="patrol-{flight_id}.pdf"'},
    )
