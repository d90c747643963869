"""The analysts' map: an HTML page (Leaflet, served from our own static files) and its data."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.db import read_outside_transaction
from api.deps import BBox, CurrentUser, SessionDep
from api.models.notices import FindingClass
from api.services.mapdata import map_data

router = APIRouter(tags=["map"])
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@router.get(
    "/map",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the map page"}},
)
def map_page(request: Request) -> HTMLResponse:
    """The map page. It asks for a login itself and then reads `/map/data`."""
    server = request.app.state.settings.server
    config = {"tileUrl": server.map_tile_url, "tileAttribution": server.map_tile_attribution}
    page = (STATIC_DIR / "map.html").read_text(encoding="utf-8")
    # JSON inside <script>: "</" must not close the element.
    page = page.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))
    return HTMLResponse(page)


@router.get("/map/data")
def get_map_data(
    session: SessionDep,
    user: CurrentUser,
    since: Annotated[date | None, Query(description="first day (UTC), default 30 days ago")] = None,
    until: Annotated[date | None, Query(description="last day (UTC), default today")] = None,
    bureau: Annotated[str | None, Query(description="only this bureau's sites")] = None,
    finding_class: FindingClass | None = None,
    bbox: BBox = None,
) -> dict[str, Any]:
    """Sites (coloured by their most pressing notice), findings with their photos, flight
    tracks and frame footprints, as GeoJSON FeatureCollections. At most 5,000 sites come at
    once (`truncated` says when there were more: ask again with the view's `bbox`)."""
    read_outside_transaction(session)
    return map_data(
        session,
        user,
        since=since,
        until=until,
        bureau=bureau,
        finding_class=finding_class,
        bbox=bbox,
    )
