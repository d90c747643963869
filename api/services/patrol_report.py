"""The patrol report (巡查专报) of one flight: what an environmental bureau sends up the line.

Sites inspected and not inspected (with the reason), the problems found with evidence photos,
area per class, the comparison with the previous patrol of the same sites and the notices
issued; as JSON (`patrol_report`) and as a PDF in zh-CN (`patrol_report_pdf`). A site counts
as inspected only when the flight's frames saw at least ``quality.min_site_coverage`` of it.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import shapely
from fpdf.enums import XPos, YPos
from PIL import Image, ImageDraw
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import UnavailableError
from api.models.bureaus import Bureau
from api.models.flights import Flight, Frame
from api.models.notices import Finding, FindingReview, Notice
from api.models.sites import Site
from api.services.coverage import frame_footprints, seen_by, site_coverage_share, sites_seen
from api.services.notice_pdf import (
    FONT,
    HEADINGS,
    ReportDocument,
    evidence_photos,
    photo_grid,
    section_heading,
)
from api.services.notices import local_time
from dustpatrol.fonts import FontError, find_cjk_font
from dustpatrol.settings import Settings
from geo.crs import WGS84, transform_geometry, utm_crs_for

CLASS_ZH = {"exposed_soil": "裸露土方", "road_dust": "道路积尘", "covered_soil": "已苫盖土方"}
PREVIOUS_FLIGHTS = 20  # how far back the comparison looks
MAP_PX = (1000, 700)


def _areas(findings: list[Finding]) -> dict[str, float]:
    areas: dict[str, float] = defaultdict(float)
    for finding in findings:
        areas[finding.finding_class] += finding.area_m2
    return {k: round(v, 1) for k, v in sorted(areas.items())}


def patrol_report(
    session: Session,
    settings: Settings,
    flight: Flight,
    footprints: list[BaseGeometry] | None = None,
) -> dict[str, Any]:
    """The report's data (the PDF shows the same); ``footprints``: the flight's frame
    footprints when the caller has them already."""
    if footprints is None:
        footprints = frame_footprints(session, flight.id)
    seen = shapely.union_all(footprints) if footprints else None
    frames = list(session.scalars(select(Frame).where(Frame.flight_id == flight.id)))
    findings = [
        f
        for f in session.scalars(
            select(Finding).where(Finding.flight_id == flight.id).order_by(Finding.id)
        )
        if f.review != FindingReview.REJECTED.value
    ]
    by_site: dict[int, list[Finding]] = defaultdict(list)
    for finding in findings:
        if finding.site_id is not None:
            by_site[finding.site_id].append(finding)
    minimum = settings.quality.min_site_coverage
    candidates = sites_seen(session, flight.id, seen)
    earlier = list(
        session.scalars(
            select(Flight.id)
            .where(Flight.id < flight.id)
            .order_by(Flight.id.desc())
            .limit(PREVIOUS_FLIGHTS)
        )
    )
    earlier_seen: dict[int, BaseGeometry | None] = {}
    bureaus = {b.id: b.name for b in session.scalars(select(Bureau))}
    notices = {
        n.id: n
        for n in session.scalars(
            select(Notice).where(
                Notice.id.in_({f.notice_id for f in findings if f.notice_id is not None})
            )
        )
    }
    inspected, not_inspected = [], []
    for site in candidates:
        share = site_coverage_share(site, seen)
        if share <= 0.0:
            continue
        site_findings = by_site.get(site.id, [])
        problems = [f for f in site_findings if f.finding_class in ("exposed_soil", "road_dust")]
        entry: dict[str, Any] = {
            "site_id": site.site_id,
            "name": site.name,
            "bureau": bureaus.get(site.bureau_id) if site.bureau_id else None,
            "coverage": round(share, 3),
            "areas_m2": _areas(site_findings),
            "notices": sorted(
                {notices[f.notice_id].number for f in site_findings if f.notice_id in notices}
            ),
        }
        if share < minimum and not problems:
            entry["reason"] = f"只拍到 {share:.0%}（需 {minimum:.0%}）"
            not_inspected.append(entry)
            continue
        entry["status"] = "problems" if problems else "compliant"
        entry["previous"] = _previous(session, site, earlier, earlier_seen, minimum)
        inspected.append(entry)
    captured = [f.captured_at for f in frames if f.captured_at is not None]
    return {
        "flight": {
            "id": flight.id,
            "name": flight.name,
            "drone": flight.drone,
            "operator": flight.operator,
            "created_at": flight.created_at.isoformat(),
            "first_frame_at": min(captured).isoformat() if captured else None,
            "last_frame_at": max(captured).isoformat() if captured else None,
            "frames": len(frames),
            "frames_ready": sum(1 for f in frames if f.status == "ready"),
            "frames_failed": sum(1 for f in frames if f.status == "failed"),
        },
        "sites_inspected": inspected,
        "sites_not_inspected": not_inspected,
        "areas_m2": _areas(findings),
        "problem_sites": sum(1 for s in inspected if s["status"] == "problems"),
        "notices": [
            {
                "number": n.number,
                "site": next((s.site_id for s in candidates if s.id == n.site_id), None),
                "class": n.finding_class,
                "state": n.state,
                "deadline": n.deadline.isoformat(),
            }
            for n in sorted(notices.values(), key=lambda n: n.number)
        ],
    }


def _previous(
    session: Session,
    site: Site,
    earlier: list[int],
    earlier_seen: dict[int, BaseGeometry | None],
    minimum: float,
) -> dict[str, Any] | None:
    """The latest earlier flight that inspected the site, and what it found there."""
    for flight_id in earlier:
        if flight_id not in earlier_seen:
            earlier_seen[flight_id] = seen_by(session, flight_id)
        if site_coverage_share(site, earlier_seen[flight_id]) < minimum:
            continue
        found = [
            f
            for f in session.scalars(
                select(Finding).where(Finding.flight_id == flight_id, Finding.site_id == site.id)
            )
            if f.review != FindingReview.REJECTED.value
        ]
        return {"flight": flight_id, "areas_m2": _areas(found)}
    return None


def patrol_report_pdf(session: Session, settings: Settings, flight: Flight) -> bytes:
    """The report as a PDF in zh-CN. Raises UnavailableError if no Chinese font is installed."""
    try:
        font_path = find_cjk_font(settings.notices.pdf_font)
    except FontError as exc:
        raise UnavailableError(str(exc)) from None
    footprints = frame_footprints(session, flight.id)
    data = patrol_report(session, settings, flight, footprints)
    pdf = ReportDocument(f"巡查专报 {flight.id}")
    pdf.add_font(FONT, "", str(font_path), collection_font_number=0)
    pdf.set_title(f"无人机扬尘巡查专报 {flight.name}")
    pdf.set_author("dustpatrol")
    pdf.set_creation_date(datetime.now(UTC))
    pdf.add_page()
    pdf.set_font(FONT, size=20)
    pdf.cell(0, 11, "无人机扬尘污染巡查专报", align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=10)
    pdf.set_text_color(90)
    pdf.cell(0, 6, f"Drone dust patrol report · flight {flight.id} · {flight.name}", align="C")
    pdf.ln(9)
    pdf.set_text_color(0)

    info = data["flight"]
    when = local_time(flight.created_at, settings)
    inspected, missing = data["sites_inspected"], data["sites_not_inspected"]
    areas = data["areas_m2"]
    summary = (
        f"{when}，无人机（{info['drone'] or '—'}，飞手 {info['operator'] or '—'}）巡查，"
        f"拍摄照片 {info['frames']} 张（可用 {info['frames_ready']} 张）。"
        f"完成检查工地 {len(inspected)} 个，其中发现问题 {data['problem_sites']} 个；"
        f"未完成检查 {len(missing)} 个。发现裸露土方约 {areas.get('exposed_soil', 0):.0f} 平方米、"
        f"道路积尘约 {areas.get('road_dust', 0):.0f} 平方米，已苫盖土方约 "
        f"{areas.get('covered_soil', 0):.0f} 平方米；下发整改通知 {len(data['notices'])} 份。"
    )
    pdf.set_font(FONT, size=11.5)
    pdf.multi_cell(0, 7, summary, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)

    section_heading(pdf, "巡查范围", "Map: sites, frames and findings")
    pdf.image(io.BytesIO(_flight_map_png(session, flight, footprints)), x=pdf.l_margin, w=150)
    pdf.ln(3)

    section_heading(pdf, "检查结果", "Sites inspected")
    pdf.set_font(FONT, size=9)
    with pdf.table(
        col_widths=(22, 52, 18, 22, 22, 22, 22),
        text_align="CENTER",
        line_height=5.5,
        headings_style=HEADINGS,
    ) as table:
        heading = table.row()
        for label in ("工地", "名称", "覆盖", "裸露 m²", "积尘 m²", "上次裸露", "通知"):
            heading.cell(label)
        for site in inspected:
            row = table.row()
            row.cell(site["site_id"])
            row.cell(site["name"] or "")
            row.cell(f"{site['coverage']:.0%}")
            row.cell(f"{site['areas_m2'].get('exposed_soil', 0):.0f}")
            row.cell(f"{site['areas_m2'].get('road_dust', 0):.0f}")
            previous = site["previous"]
            row.cell(f"{previous['areas_m2'].get('exposed_soil', 0):.0f}" if previous else "首次")
            row.cell("、".join(site["notices"]) or "—")
    pdf.ln(4)
    if missing:
        section_heading(pdf, "未完成检查", "Sites not inspected")
        pdf.set_font(FONT, size=9.5)
        for site in missing:
            pdf.cell(
                0,
                6,
                f"{site['site_id']} {site['name'] or ''}：{site['reason']}",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
        pdf.ln(3)
    problems = list(
        session.scalars(
            select(Finding)
            .where(
                Finding.flight_id == flight.id,
                Finding.finding_class.in_(("exposed_soil", "road_dust")),
                Finding.review != FindingReview.REJECTED.value,
            )
            .order_by(Finding.area_m2.desc())
        )
    )
    photos, _ = evidence_photos(session, settings, problems)
    photo_grid(pdf, photos, "问题照片", "Evidence", "（本次巡查未发现问题）")
    return bytes(pdf.output())


def _flight_map_png(session: Session, flight: Flight, footprints: list[BaseGeometry]) -> bytes:
    """Sites (grey), frame footprints (blue outlines) and findings (red), north up."""
    findings = list(session.scalars(select(Finding).where(Finding.flight_id == flight.id)))
    image = Image.new("RGB", MAP_PX, (248, 246, 240))
    if not footprints:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()
    seen = shapely.union_all(footprints)
    min_lon, min_lat, max_lon, max_lat = seen.bounds
    sites = list(
        session.scalars(
            select(Site).where(
                Site.max_lon >= min_lon,
                Site.min_lon <= max_lon,
                Site.max_lat >= min_lat,
                Site.min_lat <= max_lat,
            )
        )
    )
    centre = seen.centroid
    utm = utm_crs_for(centre.x, centre.y)
    to_utm = [transform_geometry(f, WGS84, utm) for f in footprints]
    x0, y0, x1, y1 = shapely.total_bounds(to_utm)
    width, height = MAP_PX
    scale = min(width / (x1 - x0), height / (y1 - y0)) * 0.95

    def rings(geometry: BaseGeometry) -> list[list[tuple[float, float]]]:
        polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
        return [
            [
                (width / 2 + (x - (x0 + x1) / 2) * scale, height / 2 - (y - (y0 + y1) / 2) * scale)
                for x, y in ring.coords
            ]
            for polygon in polygons
            if isinstance(polygon, Polygon)
            for ring in (polygon.exterior, *polygon.interiors)
        ]

    draw = ImageDraw.Draw(image)
    for site in sites:
        for ring in rings(transform_geometry(shape(json.loads(site.geometry_geojson)), WGS84, utm)):
            draw.polygon(ring, fill=(222, 222, 210), outline=(90, 90, 90), width=2)
    for footprint in to_utm:
        for ring in rings(footprint):
            draw.line(ring, fill=(90, 140, 220), width=1)
    colours = {"exposed_soil": (210, 40, 30), "road_dust": (230, 150, 20)}
    for finding in findings:
        colour = colours.get(finding.finding_class, (40, 150, 70))
        geometry = transform_geometry(shape(json.loads(finding.geometry_geojson)), WGS84, utm)
        for ring in rings(geometry):
            draw.polygon(ring, fill=colour, outline=colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
