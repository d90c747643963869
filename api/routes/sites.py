"""Sites: import a registry file, list and filter, GeoJSON. Bureau users see their own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from api.deps import BBox, CurrentUser, Offset, SessionDep, StaffUser
from api.errors import InvalidInputError
from api.models.sites import ImportReport, SitePublic
from api.services import sites as service

router = APIRouter(prefix="/sites", tags=["sites"])
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@router.post("/import")
async def import_sites(
    request: Request,
    session: SessionDep,
    user: StaffUser,
    file: UploadFile,
    crs: Annotated[
        str | None, Query(description="EPSG:xxxx or gcj02, when the file has no CRS")
    ] = None,
    encoding: Annotated[str | None, Query(description="attribute encoding, e.g. gbk")] = None,
    id_field: Annotated[str | None, Query(description="attribute holding the site id")] = None,
) -> ImportReport:
    """Import a registry (GeoJSON, KML/KMZ, zipped Shapefile, GeoPackage, CSV with WKT)."""
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidInputError(f"the file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    return service.import_registry(
        session,
        data,
        file.filename or "upload",
        crs=crs,
        encoding=encoding,
        id_field=id_field,
        actor=user,
    )


@router.get("")
def list_sites(
    session: SessionDep,
    user: CurrentUser,
    kind: str | None = None,
    bureau: str | None = None,
    bbox: BBox = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[SitePublic]:
    sites = service.find_sites(
        session, user, kind=kind, bureau=bureau, bbox=bbox, limit=limit, offset=offset
    )
    names = service.bureau_names(session)
    return [service.site_public(session, s, names) for s in sites]


@router.get(
    "/geojson",
    response_class=JSONResponse,
    responses={200: {"content": {"application/geo+json": {}}}},
)
def sites_geojson(
    session: SessionDep,
    user: CurrentUser,
    kind: str | None = None,
    bureau: str | None = None,
    bbox: BBox = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    offset: Offset = 0,
) -> JSONResponse:
    """The sites as an RFC 7946 FeatureCollection."""
    sites = service.find_sites(
        session, user, kind=kind, bureau=bureau, bbox=bbox, limit=limit, offset=offset
    )
    return JSONResponse(
        service.sites_feature_collection(session, sites), media_type="application/geo+json"
    )


@router.get("/{site_id}")
def get_site(site_id: str, session: SessionDep, user: CurrentUser) -> SitePublic:
    return service.site_public(session, service.get_site(session, user, site_id))
