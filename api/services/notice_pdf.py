"""A notice as a PDF in zh-CN: the text, the problems with their areas, a small map of the
site with the findings, the evidence crops and the audit trail.

The map is drawn here from the site and finding polygons (in the site's UTM zone, north up,
with a scale bar): no basemap and no network, so it works in an offline bureau network.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from typing import Any

import shapely
from fpdf import FPDF, FontFace
from fpdf.enums import XPos, YPos
from PIL import Image, ImageDraw, ImageFont
from shapely.geometry import MultiPolygon, Polygon, shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import ApiError, UnavailableError
from api.models.bureaus import Bureau
from api.models.notices import Finding, Notice, NoticeEvent, NoticePhoto
from api.models.sites import Site
from api.services.evidence import evidence_crop
from api.services.notices import CLASS_NAMES, local_time, photo_key
from dustpatrol.fonts import FontError, find_cjk_font
from dustpatrol.settings import Settings
from dustpatrol.storage import MissingObjectError, open_storage
from geo.crs import WGS84, transform_geometry, utm_crs_for

STATE_NAMES = {
    "issued": "已下发",
    "acknowledged": "已签收",
    "rectified": "已整改",
    "verified": "已复核",
    "closed": "已办结",
    "overdue": "已逾期",
    "escalated": "已升级督办",
    "rejected": "已撤销",
}
MAX_PHOTOS = 6
MAP_PX = (900, 600)
FONT = "cjk"
HEADINGS = FontFace(emphasis="", fill_color=(232, 232, 226))  # the CJK font has no bold face


def notice_pdf(session: Session, settings: Settings, notice: Notice) -> bytes:
    """The PDF of ``notice``. Raises UnavailableError if no Chinese font is installed."""
    try:
        font_path = find_cjk_font(settings.notices.pdf_font)
    except FontError as exc:
        raise UnavailableError(str(exc)) from None
    site = session.get(Site, notice.site_id)
    assert site is not None
    bureau = session.get(Bureau, notice.bureau_id) if notice.bureau_id else None
    findings = list(
        session.scalars(select(Finding).where(Finding.notice_id == notice.id).order_by(Finding.id))
    )
    events = list(
        session.scalars(
            select(NoticeEvent).where(NoticeEvent.notice_id == notice.id).order_by(NoticeEvent.id)
        )
    )
    zh_class, en_class = CLASS_NAMES.get(notice.finding_class, (notice.finding_class,) * 2)

    pdf = ReportDocument(notice.number)
    pdf.add_font(FONT, "", str(font_path), collection_font_number=0)
    pdf.set_title(f"整改通知书 {notice.number}")
    pdf.set_author("dustpatrol")
    pdf.set_creation_date(datetime.now(UTC))
    pdf.add_page()

    pdf.set_font(FONT, size=20)
    pdf.cell(0, 11, "扬尘污染问题整改通知书", align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=10)
    pdf.set_text_color(90)
    pdf.cell(0, 6, f"Rectification notice  {notice.number}", align="C")
    pdf.ln(9)
    pdf.set_text_color(0)

    rows = [
        ("通知编号", notice.number),
        ("责任单位", bureau.name if bureau else "（未指定）"),
        ("工地名称", f"{site.name or ''}（{site.site_id}）"),
        ("地址", site.address or "—"),
        ("施工许可证号", site.permit_number or "—"),
        ("问题类型", f"{zh_class}（{en_class}）"),
        ("下发时间", local_time(notice.issued_at, settings)),
        ("整改期限", local_time(notice.deadline, settings)),
        ("当前状态", STATE_NAMES.get(notice.state, notice.state)),
    ]
    pdf.set_font(FONT, size=10.5)
    with pdf.table(col_widths=(32, 148), first_row_as_headings=False, line_height=6.5) as table:
        for key, value in rows:
            row = table.row()
            row.cell(key)
            row.cell(value)
    pdf.ln(4)
    pdf.set_font(FONT, size=11.5)
    pdf.multi_cell(0, 7, notice.text_zh, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=9)
    pdf.set_text_color(90)
    pdf.multi_cell(0, 5, notice.text_en, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0)
    pdf.ln(3)

    section_heading(pdf, "问题明细", "Findings")
    pdf.set_font(FONT, size=9.5)
    with pdf.table(
        col_widths=(18, 18, 34, 30, 24, 28, 28),
        text_align="CENTER",
        line_height=6,
        headings_style=HEADINGS,
    ) as table:
        heading = table.row()
        for label in ("发现", "架次", "类型", "面积 m²", "置信度", "定位误差 m", "照片"):
            heading.cell(label)
        for finding in findings:
            row = table.row()
            row.cell(f"#{finding.id}")
            row.cell(str(finding.flight_id))
            row.cell(CLASS_NAMES.get(finding.finding_class, (finding.finding_class,))[0])
            row.cell(f"{finding.area_m2:.1f}")
            row.cell(f"{finding.confidence:.2f}")
            row.cell(f"{finding.uncertainty_m:.2f}")
            row.cell(str(len(finding.evidence)))
    total = sum(f.area_m2 for f in findings)
    pdf.ln(1)
    pdf.cell(0, 6, f"合计 {len(findings)} 处，面积约 {total:.0f} 平方米。")
    pdf.ln(9)

    section_heading(pdf, "位置示意图", "Site map (UTM, north up)")
    map_png = site_map_png(site, findings)
    pdf.image(io.BytesIO(map_png), x=pdf.l_margin, w=120)
    pdf.ln(3)

    photos, missing = evidence_photos(session, settings, findings)
    photo_grid(
        pdf,
        photos,
        "现场照片",
        "Evidence",
        "（无可用照片：证据帧尚未上传）",
        f"另有 {missing} 张证据照片的原始帧尚未上传。" if missing else "",
    )
    rectification = _rectification_photos(session, settings, notice)
    if rectification:
        photo_grid(pdf, rectification, "整改照片", "Rectification photos", "")

    section_heading(pdf, "办理记录", "Audit trail")
    pdf.set_font(FONT, size=9)
    with pdf.table(col_widths=(36, 44, 100), line_height=5.5, headings_style=HEADINGS) as table:
        heading = table.row()
        for label in ("时间", "状态", "说明"):
            heading.cell(label)
        for event in events:
            row = table.row()
            row.cell(local_time(event.at, settings))
            before = STATE_NAMES.get(event.from_state, "") if event.from_state else ""
            after = STATE_NAMES.get(event.to_state, event.to_state)
            row.cell(f"{before} → {after}" if before else after)
            row.cell(event.note or "")
    return bytes(pdf.output())


class ReportDocument(FPDF):
    def __init__(self, number: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.number = number
        self.set_auto_page_break(auto=True, margin=16)
        self.set_margins(15, 15, 15)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(120)
        self.cell(
            0, 5, f"{self.number} · dustpatrol 无人机巡查 · 第 {self.page_no()} 页", align="C"
        )
        self.set_text_color(0)


def section_heading(pdf: FPDF, zh: str, en: str) -> None:
    if pdf.will_page_break(40):
        pdf.add_page()
    pdf.set_font(FONT, size=13)
    pdf.cell(0, 8, zh, new_x=XPos.END)
    pdf.set_font(FONT, size=9)
    pdf.set_text_color(110)
    pdf.cell(0, 8, f"  {en}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0)


def evidence_photos(
    session: Session, settings: Settings, findings: list[Finding]
) -> tuple[list[tuple[bytes, str]], int]:
    """Up to MAX_PHOTOS evidence crops with captions, and how many could not be cut."""
    photos: list[tuple[bytes, str]] = []
    missing = 0
    for finding in findings:
        for index, entry in enumerate(finding.evidence):
            if len(photos) == MAX_PHOTOS:
                break
            try:
                data = evidence_crop(session, settings, finding, index)
            except ApiError:
                missing += 1
                continue
            photos.append((data, f"发现 #{finding.id} · {entry.get('frame_id', '')}"))
    return photos, missing


def _rectification_photos(
    session: Session, settings: Settings, notice: Notice
) -> list[tuple[bytes, str]]:
    """The photos the bureau uploaded to the notice, scaled down, oldest first."""
    photos: list[tuple[bytes, str]] = []
    for photo in session.scalars(
        select(NoticePhoto).where(NoticePhoto.notice_id == notice.id).order_by(NoticePhoto.id)
    ):
        if len(photos) == MAX_PHOTOS:
            break
        try:
            data = open_storage(settings).get(photo_key(photo.sha256))
        except MissingObjectError:
            continue
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB")
            small.thumbnail((800, 800))
            buffer = io.BytesIO()
            small.save(buffer, "JPEG", quality=85)
        photos.append((buffer.getvalue(), f"{local_time(photo.at, settings)} · {photo.filename}"))
    return photos


def photo_grid(
    pdf: FPDF, photos: list[tuple[bytes, str]], zh: str, en: str, empty: str, note: str = ""
) -> None:
    """A heading and the photos two per row, each with its caption."""
    width, gap = 86.0, 8.0
    if photos:
        with Image.open(io.BytesIO(photos[0][0])) as first:
            if pdf.will_page_break(width * first.height / first.width + 20):
                pdf.add_page()  # keep the heading with its first row of photos
    section_heading(pdf, zh, en)
    pdf.set_font(FONT, size=9)
    if not photos:
        pdf.cell(0, 6, empty, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(3)
        return
    for start in range(0, len(photos), 2):
        pair = photos[start : start + 2]
        heights = []
        for data, _ in pair:
            with Image.open(io.BytesIO(data)) as image:
                heights.append(width * image.height / image.width)
        row_height = max(heights) + 7
        if pdf.will_page_break(row_height):
            pdf.add_page()
        top = pdf.get_y()
        for column, (data, caption) in enumerate(pair):
            x = pdf.l_margin + column * (width + gap)
            pdf.image(io.BytesIO(data), x=x, y=top, w=width)
            pdf.set_xy(x, top + heights[column] + 0.5)
            pdf.cell(width, 5, caption, align="C")
        pdf.set_xy(pdf.l_margin, top + row_height)
    if note:
        pdf.cell(0, 6, note)
        pdf.ln(6)
    pdf.ln(3)


def site_map_png(site: Site, findings: list[Finding]) -> bytes:
    """The site (grey outline) and its findings (red), north up, with a scale bar."""
    site_lonlat = shape(json.loads(site.geometry_geojson))
    centre = site_lonlat.centroid
    utm = utm_crs_for(centre.x, centre.y)
    site_utm = transform_geometry(site_lonlat, WGS84, utm)
    finding_shapes = [
        transform_geometry(shape(json.loads(f.geometry_geojson)), WGS84, utm) for f in findings
    ]
    min_x, min_y, max_x, max_y = shapely.total_bounds([site_utm, *finding_shapes])
    span = max(max_x - min_x, max_y - min_y, 10.0) * 1.15
    cx, cy = (min_x + max_x) / 2, (min_y + max_y) / 2
    width, height = MAP_PX
    scale = min(width, height) / span  # px per metre

    def to_px(geometry: Any) -> list[list[tuple[float, float]]]:
        rings = []
        polygons = geometry.geoms if isinstance(geometry, MultiPolygon) else [geometry]
        for polygon in polygons:
            if not isinstance(polygon, Polygon):
                continue
            for ring in (polygon.exterior, *polygon.interiors):
                rings.append(
                    [
                        (width / 2 + (x - cx) * scale, height / 2 - (y - cy) * scale)
                        for x, y in ring.coords
                    ]
                )
        return rings

    image = Image.new("RGB", MAP_PX, (248, 246, 240))
    draw = ImageDraw.Draw(image)
    for ring in to_px(site_utm):
        draw.polygon(ring, fill=(226, 226, 214), outline=(90, 90, 90), width=3)
    for geometry in finding_shapes:
        for ring in to_px(geometry):
            draw.polygon(ring, fill=(235, 120, 100), outline=(200, 30, 30), width=2)
    font = ImageFont.load_default(size=22)
    bar_m = _nice_length(span / 4)
    bar_px = bar_m * scale
    draw.rectangle((30, height - 40, 30 + bar_px, height - 32), fill=(30, 30, 30))
    draw.text((30, height - 70), f"{bar_m:g} m", fill=(30, 30, 30), font=font)
    draw.polygon([(width - 40, 30), (width - 52, 62), (width - 28, 62)], fill=(30, 30, 30))
    draw.text((width - 47, 66), "N", fill=(30, 30, 30), font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _nice_length(metres: float) -> float:
    """1, 2 or 5 times a power of ten, not above ``metres``."""
    power = 10 ** math.floor(math.log10(max(metres, 1e-9)))
    for step in (5, 2, 1):
        if step * power <= metres:
            return float(step * power)
    return float(power)
