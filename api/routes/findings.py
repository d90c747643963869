"""Findings in from the pipeline; analysts confirm or reject them."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from api.deps import MAX_ID, CurrentUser, RowId, SessionDep, StaffUser, require_roles
from api.models.notices import Finding, FindingClass, FindingPublic, FindingsIngested
from api.models.sites import Site
from api.models.users import Role, User
from api.services import notices as service
from api.services.evidence import evidence_crop

router = APIRouter(tags=["findings"])
Reviewer = Annotated[User, Depends(require_roles(Role.ADMIN, Role.ANALYST))]


@router.post("/flights/{flight_id}/findings")
def post_findings(
    flight_id: RowId,
    request: Request,
    session: SessionDep,
    _: StaffUser,
    collection: Annotated[dict[str, Any], Body()],
) -> FindingsIngested:
    """Take the pipeline's findings (GeoJSON, as `geo.matching.findings_geojson` writes them)."""
    return service.ingest(session, request.app.state.settings, flight_id, collection)


@router.get(
    "/flights/{flight_id}/findings.geojson",
    response_class=JSONResponse,
    responses={200: {"content": {"application/geo+json": {}}}},
)
def flight_findings_geojson(flight_id: RowId, session: SessionDep, _: StaffUser) -> JSONResponse:
    """The flight's findings as GeoJSON (lon/lat): for GIS tools and evaluation."""
    features = []
    for finding in session.scalars(
        select(Finding).where(Finding.flight_id == flight_id).order_by(Finding.id)
    ):
        public = service.finding_public(session, finding)
        features.append(
            {
                "type": "Feature",
                "geometry": json.loads(finding.geometry_geojson),
                "properties": {
                    "id": finding.id,
                    "site_id": public.site,
                    "class": finding.finding_class,
                    "area_m2": finding.area_m2,
                    "confidence": finding.confidence,
                    "uncertainty_m": finding.uncertainty_m,
                    "review": finding.review,
                    "notice": public.notice,
                    "evidence": finding.evidence,
                },
            }
        )
    return JSONResponse(
        {"type": "FeatureCollection", "features": features},
        media_type="application/geo+json",
    )


@router.get("/findings")
def list_findings(
    session: SessionDep,
    user: CurrentUser,
    flight: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="only this flight's findings")
    ] = None,
    site: str | None = None,
    finding_class: FindingClass | None = None,
) -> list[FindingPublic]:
    query = service.visible_findings(user)
    if flight is not None:
        query = query.where(Finding.flight_id == flight)
    if site:
        query = query.join(Site, Finding.site_id == Site.id).where(Site.site_id == site)
    if finding_class:
        query = query.where(Finding.finding_class == finding_class)
    return [service.finding_public(session, f) for f in session.scalars(query)]


@router.get("/findings/{finding_id}")
def get_finding(finding_id: RowId, session: SessionDep, user: CurrentUser) -> FindingPublic:
    return service.finding_public(session, service.get_finding(session, user, finding_id))


@router.get(
    "/findings/{finding_id}/evidence/{index}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the evidence crop"}},
)
def get_evidence(
    finding_id: RowId,
    index: Annotated[int, Path(ge=0, le=10_000)],
    request: Request,
    session: SessionDep,
    user: CurrentUser,
) -> Response:
    """Evidence ``index`` of the finding: the frame cropped around the pixel box, box outlined."""
    finding = service.get_finding(session, user, finding_id)
    data = evidence_crop(session, request.app.state.settings, finding, index)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.post("/findings/{finding_id}/confirm")
def confirm(
    finding_id: RowId, request: Request, session: SessionDep, user: Reviewer
) -> FindingPublic:
    return service.review(session, request.app.state.settings, finding_id, True, user)


@router.post("/findings/{finding_id}/reject")
def reject(
    finding_id: RowId, request: Request, session: SessionDep, user: Reviewer
) -> FindingPublic:
    return service.review(session, request.app.state.settings, finding_id, False, user)
