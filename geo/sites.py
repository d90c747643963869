"""The site registry: load sites from the files bureaus have, repair and validate them.

Formats: GeoJSON, KML/KMZ, Shapefile (also zipped), GeoPackage and CSV with a WKT column.
Sites are returned in EPSG:4326 with their attributes; areas and overlaps are computed in the
sites' UTM zone. What cannot be used is listed in a report with the feature it came from,
never silently dropped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from geo.crs import WGS84, CrsError, gcj02_to_wgs84, parse_crs
from geo.errors import GeoError

GCJ02 = "gcj02"
VECTOR_SUFFIXES = {".geojson", ".json", ".kml", ".kmz", ".shp", ".zip", ".gpkg"}
CSV_SUFFIXES = {".csv", ".txt"}
EXTRA_FIELDS = "_extra_fields"  # where a CSV row's values beyond the header's columns go
ROW_PROBLEM = "_row_problem"  # why a feature could not be read (it is rejected by name)
GEOJSON_SUFFIXES = {".geojson", ".json"}
MIN_OVERLAP_M2 = 0.01

# Attribute names as bureaus write them, Chinese and English, mapped to ours. Specific names
# come first: generic ones ("id", "name") are also what KML readers fill from Placemark tags.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "site_id": ("site_id", "siteid", "编号", "站点编号", "项目编号", "工地编号", "code", "id"),
    "name": ("site_name", "名称", "项目名称", "工地名称", "企业名称", "单位名称", "name"),
    "kind": ("kind", "类型", "类别", "工地类型", "category", "type"),
    "responsible_bureau": (
        "responsible_bureau",
        "bureau",
        "责任单位",
        "主管部门",
        "监管部门",
        "责任部门",
    ),
    "permit_number": (
        "permit_number",
        "permit",
        "许可证号",
        "施工许可证号",
        "备案号",
        "施工许可证",
    ),
    "address": ("address", "地址", "详细地址", "项目地址"),
    "contact": ("contact", "contact_phone", "phone", "联系人", "联系电话", "电话"),
}
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom", "shape", "边界", "范围", "坐标")
KIND_ALIASES: dict[str, str] = {
    "construction": "construction",
    "建筑工地": "construction",
    "工地": "construction",
    "在建工地": "construction",
    "demolition": "demolition",
    "拆迁": "demolition",
    "拆除": "demolition",
    "拆迁工地": "demolition",
    "factory": "factory",
    "工厂": "factory",
    "企业": "factory",
    "工业企业": "factory",
    "coal_yard": "coal_yard",
    "煤场": "coal_yard",
    "堆煤场": "coal_yard",
    "restaurant": "restaurant",
    "餐饮": "restaurant",
    "饭店": "restaurant",
}
CANONICAL_COLUMNS = ["site_id", *[name for name in FIELD_ALIASES if name != "site_id"]]


class SiteRegistryError(GeoError):
    """A site registry file cannot be read at all."""


@dataclass(frozen=True, slots=True)
class SiteIssue:
    feature: str  # the site id, or "#n" (1-based feature number) when it has none
    problem: str


@dataclass(frozen=True, slots=True)
class Overlap:
    site_a: str
    site_b: str
    area_m2: float


@dataclass(slots=True)
class SiteReport:
    """What loading a registry found: repairs made, features rejected, sites overlapping."""

    source: str
    crs_note: str = ""
    loaded: int = 0
    repaired: list[SiteIssue] = field(default_factory=list)
    rejected: list[SiteIssue] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every feature was loaded (repairs and overlaps are warnings)."""
        return not self.rejected and self.loaded > 0


@dataclass(slots=True)
class SiteRegistry:
    sites: gpd.GeoDataFrame  # EPSG:4326; CANONICAL_COLUMNS + "attributes" + geometry
    report: SiteReport


def load_sites(
    path: Path | str,
    *,
    crs: str | None = None,
    id_field: str | None = None,
    encoding: str | None = None,
) -> SiteRegistry:
    """Load and validate a site registry file.

    ``crs`` states the coordinates' CRS when the file has none (or overrides it): an EPSG code
    like ``EPSG:4547``, or ``gcj02`` for longitude/latitude copied from Chinese map services,
    which are converted to WGS84. ``encoding`` overrides the attribute text encoding (e.g.
    ``gbk`` for a shapefile without a ``.cpg``).
    """
    path = Path(path)
    if not path.exists():
        raise SiteRegistryError(f"{path} does not exist")
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise SiteRegistryError(
                f"unknown text encoding {encoding!r}; use one Python knows, e.g. gbk, gb18030, "
                "utf-8"
            ) from None
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        frame = _read_csv(path, encoding)
    elif suffix in GEOJSON_SUFFIXES:
        frame = _read_geojson(path, encoding)
    elif suffix in VECTOR_SUFFIXES:
        frame = _read_vector(path, encoding)
    else:
        raise SiteRegistryError(
            f"{path}: unsupported file type {suffix!r}; use GeoJSON, KML/KMZ, Shapefile (.shp or "
            ".zip), GeoPackage (.gpkg) or CSV with a WKT column"
        )
    report = SiteReport(source=str(path))
    frame = _apply_crs(frame, crs, path, report)
    sites = _validate(frame, id_field, report)
    report.loaded = len(sites)
    if len(sites) == 0:
        report.notes.append("no usable site in the file")
    report.overlaps = find_overlaps(sites)
    return SiteRegistry(sites=sites, report=report)


def _read_vector(path: Path, encoding: str | None) -> gpd.GeoDataFrame:
    if path.suffix.lower() == ".kmz":
        # GDAL's KMZ reading drops ExtendedData schema fields; read the inner KML instead.
        with tempfile.TemporaryDirectory() as folder:
            return _read_vector(_extract_kml(path, Path(folder)), encoding)
    target = str(path)
    if path.suffix.lower() == ".zip":
        target = f"/vsizip/{path}"
    try:
        layers = pyogrio.list_layers(target)
        frames = [
            pyogrio.read_dataframe(target, layer=str(layer_name), encoding=encoding)
            for layer_name, _ in layers
        ]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise SiteRegistryError(f"{path}: cannot be read as a vector file ({exc})") from None
    except UnicodeDecodeError:
        raise SiteRegistryError(
            f"{path}: attribute text is not in the expected encoding; pass --encoding gbk "
            "(or the encoding the file was written in)"
        ) from None
    frames = [f for f in frames if len(f)]
    if not frames:
        return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=None)
    crs_values = {f.crs.to_string() if f.crs else None for f in frames}
    if len(crs_values) > 1:
        raise SiteRegistryError(f"{path}: layers use different CRSs ({crs_values}); split the file")
    merged = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(merged, geometry="geometry", crs=frames[0].crs)


def _extract_kml(kmz: Path, folder: Path) -> Path:
    try:
        with zipfile.ZipFile(kmz) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".kml")]
            if not names:
                raise SiteRegistryError(f"{kmz}: a KMZ must contain a .kml document; none found")
            name = "doc.kml" if "doc.kml" in names else names[0]
            target = folder / "doc.kml"
            target.write_bytes(archive.read(name))
            return target
    except zipfile.BadZipFile:
        raise SiteRegistryError(f"{kmz}: not a valid KMZ (zip) file") from None


def _read_geojson(path: Path, encoding: str | None) -> gpd.GeoDataFrame:
    """GeoJSON read feature by feature: a feature that is not one (an unknown type, no or a
    broken geometry: an unclosed or too short ring) is kept as a row with its problem, so the
    report names it and every other feature loads. RFC 7946 coordinates are WGS84; a legacy
    ``crs`` member naming an EPSG code is honoured."""
    text = _decode(path.read_bytes(), encoding, path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SiteRegistryError(
            f"{path}: cannot be read as GeoJSON: not valid JSON ({exc.msg} at line "
            f"{exc.lineno}, column {exc.colno})"
        ) from None
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "FeatureCollection" and isinstance(document.get("features"), list):
        features = document["features"]
    elif kind == "Feature":
        features = [document]
    else:
        raise SiteRegistryError(
            f"{path}: not a GeoJSON FeatureCollection (its type is {kind!r}); a registry is "
            "a FeatureCollection of polygon features"
        )
    rows: list[dict[str, Any]] = []
    for feature in features:
        row: dict[str, Any] = {"geometry": None, ROW_PROBLEM: None}
        if not isinstance(feature, dict):
            row[ROW_PROBLEM] = f"is not a GeoJSON Feature but a {type(feature).__name__}"
            rows.append(row)
            continue
        properties = feature.get("properties")
        if isinstance(properties, dict):  # read first: they name the feature in the report
            row.update({k: v for k, v in properties.items() if k not in row})
        elif properties is not None:
            row[ROW_PROBLEM] = "its properties are not an object"
        if feature.get("type") != "Feature":
            row[ROW_PROBLEM] = f"is not a GeoJSON Feature (type {feature.get('type')!r})"
            rows.append(row)
            continue
        geometry = feature.get("geometry")
        if geometry is None:
            row[ROW_PROBLEM] = row[ROW_PROBLEM] or "has no geometry (null)"
        else:
            try:
                row["geometry"] = shape(geometry)
            except (shapely.errors.GEOSException, ValueError, TypeError, KeyError, IndexError,
                    AttributeError) as exc:  # fmt: skip
                row[ROW_PROBLEM] = row[ROW_PROBLEM] or f"its geometry cannot be read ({exc})"
        rows.append(row)
    crs = CRS.from_epsg(4326)  # RFC 7946 (what GDAL reports for GeoJSON too)
    legacy = document.get("crs")
    if isinstance(legacy, dict):
        name = (legacy.get("properties") or {}).get("name")
        try:
            crs = CRS.from_user_input(name)
        except Exception:  # pyproj raises its own CRSError for any unknown name
            raise SiteRegistryError(f"{path}: its crs member {name!r} is not a known CRS") from None
        if crs.equals(WGS84, ignore_axis_order=True):  # OGC CRS84 is lon/lat WGS84 too
            crs = CRS.from_epsg(4326)
    if not rows:
        return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=crs)
    return gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=crs)


def _decode(data: bytes, encoding: str | None, path: Path) -> str:
    candidates = [encoding] if encoding else ["utf-8-sig", "gb18030"]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    raise SiteRegistryError(
        f"{path}: text is neither UTF-8 nor GBK/GB18030; pass --encoding with the file's encoding"
    )


def _read_csv(path: Path, encoding: str | None) -> gpd.GeoDataFrame:
    text = _decode(path.read_bytes(), encoding, path)
    rows = list(csv.DictReader(io.StringIO(text), restkey=EXTRA_FIELDS))
    if not rows:
        return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=None)
    columns = list(rows[0])
    wkt_column = next((c for c in columns if c.strip().lower() in WKT_COLUMNS), None)
    if wkt_column is None:
        raise SiteRegistryError(
            f"{path}: no WKT column; name the geometry column one of {', '.join(WKT_COLUMNS)}"
        )
    # A row longer than the header (an unquoted comma in a value, say) keeps its extra values
    # under EXTRA_FIELDS; the row is rejected by name in the report, the others load.
    for row in rows:
        row.setdefault(EXTRA_FIELDS, None)
    frame = pd.DataFrame(rows)
    wkt = frame.pop(wkt_column).fillna("").astype(str)
    texts = [text if text.strip() else None for text in wkt]
    geometries = shapely.from_wkt(np.array(texts, dtype=object), on_invalid="ignore")
    frame["_wkt_text"] = wkt
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometries), crs=None)


def _apply_crs(
    frame: gpd.GeoDataFrame, crs: str | None, path: Path, report: SiteReport
) -> gpd.GeoDataFrame:
    if crs is not None and crs.strip().lower() in (GCJ02, "gcj-02", "gcj"):
        if frame.crs is not None and not CRS(frame.crs).equals(WGS84):
            raise CrsError(
                f"{path}: --crs gcj02 needs longitude/latitude coordinates, but the file says "
                f"{CRS(frame.crs).name}"
            )
        frame = frame.set_crs(WGS84, allow_override=True)
        frame["geometry"] = frame.geometry.apply(_gcj_geometry_to_wgs84)
        report.crs_note = "coordinates converted from GCJ-02 to WGS84"
        return frame
    if crs is not None:
        stated = parse_crs(crs)
        if frame.crs is not None and not CRS(frame.crs).equals(stated):
            report.notes.append(f"the file says {CRS(frame.crs).name}; using {stated.name} as told")
        frame = frame.set_crs(stated, allow_override=True)
    if frame.crs is None:
        raise CrsError(
            f"{path} does not say which CRS its coordinates are in (no .prj, no crs); pass "
            "--crs EPSG:4326 for WGS84 longitude/latitude, --crs gcj02 for coordinates copied "
            "from AMap/Tencent maps, or the EPSG code of a projected CRS"
        )
    report.crs_note = report.crs_note or f"read as {CRS(frame.crs).name}"
    if CRS(frame.crs).equals(WGS84):
        return frame
    return frame.to_crs(WGS84)


def _gcj_geometry_to_wgs84(geometry: BaseGeometry | None) -> BaseGeometry | None:
    if geometry is None or geometry.is_empty:
        return geometry

    def convert(coords: np.ndarray) -> np.ndarray:
        lon, lat = gcj02_to_wgs84(coords[:, 0], coords[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geometry, convert)


def _column_for(frame: pd.DataFrame, canonical: str, explicit: str | None = None) -> str | None:
    if explicit is not None:
        if explicit not in frame.columns:
            raise SiteRegistryError(
                f"no field {explicit!r}; fields are {', '.join(map(str, frame.columns))}"
            )
        return explicit
    lowered = {
        str(c).strip().lower(): str(c)
        for c in frame.columns
        if c != "geometry" and frame[c].map(_clean).notna().any()  # ignore empty columns
    }
    for alias in FIELD_ALIASES[canonical]:
        if alias.lower() in lowered:
            return lowered[alias.lower()]
    # Shapefile (DBF) field names hold 10 bytes: long Chinese names arrive truncated.
    for alias in FIELD_ALIASES[canonical]:
        for name, original in lowered.items():
            if len(name) >= 3 and not name.isascii() and alias.lower().startswith(name):
                return original
    return None


def _polygonal(geometry: BaseGeometry) -> Polygon | MultiPolygon | None:
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry if not geometry.is_empty else None
    parts = [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    polygons: list[Polygon] = []
    for part in parts:
        polygons.extend(part.geoms if isinstance(part, MultiPolygon) else [part])
    polygons = [p for p in polygons if not p.is_empty and p.area > 0]
    if not polygons:
        return None
    return polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)


def _validate(
    frame: gpd.GeoDataFrame, id_field: str | None, report: SiteReport
) -> gpd.GeoDataFrame:
    columns = {
        name: _column_for(frame, name, id_field if name == "site_id" else None)
        for name in FIELD_ALIASES
    }
    if columns["site_id"] is None:
        report.notes.append("no site id field found; ids S0001, S0002, ... assigned in file order")
    used = {c for c in columns.values() if c is not None} | {
        "geometry",
        "_wkt_text",
        EXTRA_FIELDS,
        ROW_PROBLEM,
    }
    records: list[dict[str, Any]] = []
    first_seen: dict[str, str] = {}
    for position, (_, row) in enumerate(frame.iterrows(), start=1):
        label = f"#{position}"
        site_id = _clean(row[columns["site_id"]]) if columns["site_id"] else f"S{position:04d}"
        feature = site_id or label
        geometry = row.geometry
        if isinstance(row.get(ROW_PROBLEM), str):
            report.rejected.append(SiteIssue(feature, row[ROW_PROBLEM]))
            continue
        extra = row.get(EXTRA_FIELDS)
        if isinstance(extra, list) and extra:
            report.rejected.append(
                SiteIssue(
                    feature,
                    f"has {len(extra)} more value(s) than the header has columns (an unquoted "
                    "comma inside a value?); quote that value",
                )
            )
            continue
        if not isinstance(geometry, BaseGeometry) or geometry.is_empty:
            wkt_text = str(row.get("_wkt_text", "") or "").strip()
            problem = (
                f"WKT could not be parsed: {wkt_text[:60]!r}" if wkt_text else "empty geometry"
            )
            report.rejected.append(SiteIssue(feature, problem))
            continue
        if not site_id:
            report.rejected.append(SiteIssue(label, "has no site id"))
            continue
        if site_id in first_seen:
            report.rejected.append(
                SiteIssue(
                    site_id, f"duplicate site id (first used by feature {first_seen[site_id]})"
                )
            )
            continue
        geometry = shapely.force_2d(geometry)
        if not isinstance(geometry, Polygon | MultiPolygon):
            report.rejected.append(
                SiteIssue(feature, f"is a {geometry.geom_type}; a site must be a polygon")
            )
            continue
        if not geometry.is_valid:
            reason = shapely.is_valid_reason(geometry)
            repaired = _polygonal(shapely.make_valid(geometry))
            if repaired is None:
                report.rejected.append(SiteIssue(feature, f"invalid ({reason}) and not repairable"))
                continue
            report.repaired.append(SiteIssue(feature, f"{reason}; repaired with make_valid"))
            geometry = repaired
        first_seen[site_id] = label
        record: dict[str, Any] = {"site_id": site_id}
        for name in CANONICAL_COLUMNS[1:]:
            column = columns[name]
            record[name] = _clean(row[column]) if column else None
        if record["kind"]:
            record["kind"] = KIND_ALIASES.get(record["kind"].strip().lower(), record["kind"])
        record["attributes"] = {
            str(k): _clean(v) for k, v in row.items() if k not in used and _clean(v) is not None
        }
        record["geometry"] = geometry
        records.append(record)
    if not records:
        empty = {name: pd.Series(dtype=object) for name in [*CANONICAL_COLUMNS, "attributes"]}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs=WGS84), crs=WGS84)
    return gpd.GeoDataFrame(records, geometry="geometry", crs=WGS84)


def _clean(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def find_overlaps(sites: gpd.GeoDataFrame) -> list[Overlap]:
    """Pairs of sites sharing more than 0.01 m², with the shared area in m² (UTM)."""
    if len(sites) < 2:
        return []
    projected = sites.to_crs(sites.estimate_utm_crs())
    geometries = np.asarray(projected.geometry.values)
    tree = shapely.STRtree(geometries)
    left, right = tree.query(geometries, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if len(left) == 0:
        return []
    areas = shapely.area(shapely.intersection(geometries[left], geometries[right]))
    ids = sites["site_id"].to_numpy()
    return [
        Overlap(str(ids[a]), str(ids[b]), float(area))
        for a, b, area in zip(left, right, areas, strict=True)
        if area > MIN_OVERLAP_M2
    ]


def format_report(report: SiteReport) -> str:
    """A human-readable report, one finding per line."""
    lines = [f"{report.source}: {report.loaded} site(s) loaded; {report.crs_note}"]
    lines.extend(f"note: {note}" for note in report.notes)
    lines.extend(f"repaired {issue.feature}: {issue.problem}" for issue in report.repaired)
    lines.extend(f"REJECTED {issue.feature}: {issue.problem}" for issue in report.rejected)
    lines.extend(f"overlap {o.site_a} / {o.site_b}: {o.area_m2:.1f} m²" for o in report.overlaps)
    summary = (
        f"{len(report.repaired)} repaired, {len(report.rejected)} rejected, "
        f"{len(report.overlaps)} overlapping pair(s)"
    )
    lines.append(summary)
    return "\n".join(lines)
