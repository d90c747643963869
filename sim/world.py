"""The simulated district: sites with ground-truth patches, roads and countryside distractors.

All geometry is in the district's UTM zone (metres, ``District.crs``); exports are EPSG:4326.
A district is a pure function of its `DistrictParams`: sites, roads and patches are built at
once (they are few), the countryside between them is generated per 250 m cell on demand and
cached, so memory stays bounded however large the district is and no district-sized raster
ever exists.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from geo.crs import WGS84, transform_geometry, utm_crs_for
from sim.errors import SimError
from sim.kinds import GroundTruthClass, Season, SiteKind, SurfaceKind
from sim.names import SiteIdentity, site_identity

DEFAULT_ORIGIN_LAT = 36.48
DEFAULT_ORIGIN_LON = 115.45
CELL_SIZE_M = 250.0
MIN_SITES, MAX_SITES = 10, 200
WORLD_FORMAT_VERSION = 2

Area = Polygon | MultiPolygon

PROBLEM_CLASSES = frozenset({GroundTruthClass.EXPOSED_SOIL, GroundTruthClass.ROAD_DUST})

# Drawing layers: a surface hides every surface of a lower layer beneath it.
LAYER_LAND = 1  # fields, village ground, roads
LAYER_SITE_BASE = 2
LAYER_SITE_BLOCK = 3
LAYER_SITE_DETAIL = 4  # road dust, torn-net holes, puddles
LAYER_OBJECT = 5  # buildings, machinery, trucks, trees, roofs


@dataclass(frozen=True, slots=True)
class DistrictParams:
    """Everything a district is generated from."""

    seed: int
    origin_lat: float = DEFAULT_ORIGIN_LAT
    origin_lon: float = DEFAULT_ORIGIN_LON
    n_sites: int = 40
    extent_m: float = 12_000.0
    ground_ellipsoid_height_m: float = 35.0  # flat ground, height above the WGS84 ellipsoid
    # Sites whose operators did what a notice asked: exposed soil under dust net, roads swept.
    rectified: tuple[str, ...] = ()

    def validate(self) -> None:
        if not MIN_SITES <= self.n_sites <= MAX_SITES:
            raise SimError(
                f"n_sites must be between {MIN_SITES} and {MAX_SITES}, got {self.n_sites}"
            )
        if not -80.0 <= self.origin_lat <= 84.0:
            raise SimError(f"origin_lat {self.origin_lat} is outside the UTM range (-80..84)")
        if not -180.0 <= self.origin_lon <= 180.0:
            raise SimError(f"origin_lon {self.origin_lon} must be within -180..180")
        min_extent = 400.0 * math.sqrt(self.n_sites)
        if not min_extent <= self.extent_m <= 100_000.0:
            raise SimError(
                f"extent_m must be between {min_extent:.0f} m (room for {self.n_sites} sites) "
                f"and 100000 m, got {self.extent_m}"
            )


@dataclass(frozen=True, slots=True)
class Environment:
    """Per-district lighting, season and air quality."""

    sun_azimuth_deg: float  # clockwise from north
    sun_elevation_deg: float
    season: Season
    haze_per_m: float  # extinction coefficient; 0.0005 clear, 0.004 heavy pollution day
    brightness: float  # overall exposure factor around 1.0
    warmth: float  # colour temperature shift, -1 cool .. 1 warm
    texture_offset_m: tuple[float, float] = (0.0, 0.0)  # shifts the world-anchored texture
    saturation: float = 1.0  # the camera's picture style: 1 as is, 0 grey
    contrast: float = 1.0  # about mid-grey
    overcast: float = 0.0  # 0 direct sun .. 1 thick cloud: weak shadows, flat relief

    @property
    def shadow_gain(self) -> float:
        """Brightness of ground in shadow relative to lit ground."""
        return 0.5 + 0.4 * self.overcast

    @property
    def shadow_offset(self) -> tuple[float, float]:
        """Ground offset (east, north) in metres of the shadow of a 1 m tall object."""
        length = 1.0 / math.tan(math.radians(self.sun_elevation_deg))
        azimuth = math.radians(self.sun_azimuth_deg + 180.0)
        return length * math.sin(azimuth), length * math.cos(azimuth)


@dataclass(frozen=True, slots=True)
class Surface:
    """One patch of ground or one object seen from above."""

    kind: SurfaceKind
    geometry: Area
    layer: int
    color_rgb: tuple[int, int, int]
    gt_class: GroundTruthClass = GroundTruthClass.BACKGROUND
    height_m: float = 0.0  # casts a shadow when > 0
    site_id: str | None = None
    patch_id: str | None = None
    relief_m: float = 0.0  # a mound (> 0) or a pit (< 0) shaded by the sun, not a shadow caster
    floating: bool = False  # raised off the ground (a crane jib): its shadow is detached


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    kind: SiteKind
    geometry: Area  # UTM
    identity: SiteIdentity
    compliant: bool


@dataclass(frozen=True, slots=True)
class Patch:
    """A ground-truth patch: the visible part of a labelled surface."""

    patch_id: str
    site_id: str
    gt_class: GroundTruthClass
    geometry: Area  # UTM, visible part only

    @property
    def area_m2(self) -> float:
        return float(self.geometry.area)


@dataclass(slots=True)
class District:
    """A generated district. Build it with `generate_district`."""

    params: DistrictParams
    crs: CRS
    origin_utm: tuple[float, float]
    environment: Environment
    sites: tuple[Site, ...]
    patches: tuple[Patch, ...]
    fixed_surfaces: tuple[Surface, ...]  # sites and roads
    village_centres: tuple[tuple[float, float], ...]
    _index: shapely.STRtree = field(repr=False)
    _blocked: shapely.STRtree = field(repr=False)  # sites and roads, cut out of the countryside
    _cells: CellCache | None = field(default=None, repr=False)
    _visible: dict[str, Area] | None = field(default=None, repr=False)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(min_e, min_n, max_e, max_n) in UTM metres."""
        half = self.params.extent_m / 2.0
        e0, n0 = self.origin_utm
        return (e0 - half, n0 - half, e0 + half, n0 + half)

    def to_lonlat(self) -> Transformer:
        return Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)

    def from_lonlat(self) -> Transformer:
        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    def geometry_to_lonlat(self, geometry: BaseGeometry) -> BaseGeometry:
        """A UTM geometry of this district in WGS84 longitude/latitude (EPSG:4326)."""
        return transform_geometry(geometry, self.crs, WGS84)

    def site(self, site_id: str) -> Site:
        for site in self.sites:
            if site.site_id == site_id:
                return site
        raise SimError(f"no site {site_id!r} in this district")

    def visible_part(self, surface: Surface) -> BaseGeometry | None:
        """What the renderer draws of ``surface``: a labelled surface only as its patch (the
        visible part, exactly the truth; None if nothing of it is labelled), anything else
        whole (later surfaces are drawn over it)."""
        if surface.patch_id is None:
            return surface.geometry
        if self._visible is None:
            self._visible = {p.patch_id: p.geometry for p in self.patches}
        return self._visible.get(surface.patch_id)

    def surfaces_in(self, region: BaseGeometry) -> list[Surface]:
        """Every surface intersecting ``region`` (UTM), in drawing order (lowest layer first)."""
        # Creation order within a layer decides what is drawn on top (see _visible_patches).
        hits = np.sort(self._index.query(region, predicate="intersects"))
        found = [self.fixed_surfaces[int(i)] for i in hits]
        min_e, min_n, max_e, max_n = region.bounds
        for i in range(math.floor(min_e / CELL_SIZE_M), math.floor(max_e / CELL_SIZE_M) + 1):
            for j in range(math.floor(min_n / CELL_SIZE_M), math.floor(max_n / CELL_SIZE_M) + 1):
                if box(*_cell_box(i, j)).intersects(region):
                    found.extend(s for s in self._cell(i, j) if s.geometry.intersects(region))
        found.sort(key=lambda s: s.layer)
        return found

    def _cell(self, i: int, j: int) -> tuple[Surface, ...]:
        if self._cells is None:
            self._cells = CellCache(self)
        return self._cells(i, j)


def _cell_box(i: int, j: int) -> tuple[float, float, float, float]:
    return (i * CELL_SIZE_M, j * CELL_SIZE_M, (i + 1) * CELL_SIZE_M, (j + 1) * CELL_SIZE_M)


def _rng(*keys: int | str) -> np.random.Generator:
    """A generator seeded by a stable hash of ``keys`` (independent streams per purpose)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _jitter(
    rgb: Sequence[int], rng: np.random.Generator, amount: float = 14.0
) -> tuple[int, int, int]:
    """A colour varied in brightness and, proportionally to its brightness, a little in hue
    (real soil and grass vary far more in lightness than in colour)."""
    base = np.asarray(rgb, dtype=np.float64)
    hue_shift = rng.normal(0.0, amount / 5.0, size=3) * (base.mean() / 160.0)
    shifted = base + rng.normal(0.0, amount) * (base.mean() / 128.0) + hue_shift
    r, g, b = (int(c) for c in np.clip(np.round(shifted), 0, 255))
    return r, g, b


# ---------------------------------------------------------------------------------------------
# generation


def generate_district(
    seed: int,
    *,
    origin_lat: float = DEFAULT_ORIGIN_LAT,
    origin_lon: float = DEFAULT_ORIGIN_LON,
    n_sites: int = 40,
    extent_m: float = 12_000.0,
) -> District:
    """Generate a district of ``n_sites`` sites (10–200) in a square of ``extent_m`` metres
    centred on (origin_lat, origin_lon), deterministically from ``seed``."""
    params = DistrictParams(
        seed=seed, origin_lat=origin_lat, origin_lon=origin_lon, n_sites=n_sites, extent_m=extent_m
    )
    return build_district(params)


def build_district(params: DistrictParams) -> District:
    """The district described by ``params`` (see `generate_district`)."""
    params.validate()
    crs = utm_crs_for(params.origin_lon, params.origin_lat)
    e0, n0 = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(
        params.origin_lon, params.origin_lat
    )
    environment = _environment(_rng(params.seed, "environment"))
    half = params.extent_m / 2.0
    extent = (e0 - half, n0 - half, e0 + half, n0 + half)
    roads = _main_roads(extent, _rng(params.seed, "roads"))
    road_union = shapely.union_all([r.geometry for r in roads])
    sites, site_surfaces, access = _place_sites(params, extent, road_union, environment)
    if params.rectified:
        site_surfaces = _rectify(site_surfaces, params.rectified, {s.site_id for s in sites})
    fixed = tuple(roads + access + site_surfaces)
    patches = _visible_patches(site_surfaces)
    # Compliance is what the ground truth shows, not what the layout intended.
    problems = {p.site_id for p in patches if p.gt_class in PROBLEM_CLASSES}
    sites = [replace(s, compliant=s.site_id not in problems) for s in sites]
    villages = _village_centres(extent, _rng(params.seed, "villages"))
    blocked = [s.geometry for s in sites] + [r.geometry for r in roads + access]
    return District(
        params=params,
        crs=crs,
        origin_utm=(float(e0), float(n0)),
        environment=environment,
        sites=tuple(sites),
        patches=tuple(patches),
        fixed_surfaces=fixed,
        village_centres=villages,
        _index=shapely.STRtree([s.geometry for s in fixed]),
        _blocked=shapely.STRtree(blocked),
    )


def rectified(district: District, site_ids: Iterable[str]) -> District:
    """The same district after the operators of ``site_ids`` covered their exposed soil with
    dust net and swept the dust off their roads (in addition to earlier rectifications)."""
    done = tuple(sorted(set(district.params.rectified) | set(site_ids)))
    return build_district(replace(district.params, rectified=done))


def _rectify(
    surfaces: Sequence[Surface], site_ids: Sequence[str], known: set[str]
) -> list[Surface]:
    unknown = sorted(set(site_ids) - known)
    if unknown:
        raise SimError(f"cannot rectify {', '.join(unknown)}: no such site in this district")
    chosen = set(site_ids)
    result = []
    for surface in surfaces:
        if surface.site_id not in chosen:
            result.append(surface)
        elif surface.gt_class is GroundTruthClass.EXPOSED_SOIL:
            result.append(
                replace(
                    surface,
                    kind=SurfaceKind.NET_GREEN,
                    color_rgb=NET_GREEN,
                    gt_class=GroundTruthClass.COVERED_SOIL,
                )
            )
        elif surface.gt_class is not GroundTruthClass.ROAD_DUST:  # swept away
            result.append(surface)
    return result


def _environment(rng: np.random.Generator) -> Environment:
    season = Season(str(rng.choice([s.value for s in Season])))
    max_elevation = {"summer": 72.0, "spring": 58.0, "autumn": 50.0, "winter": 33.0}[season.value]
    hazy = rng.random() < 0.2
    return Environment(
        sun_azimuth_deg=float(rng.uniform(100.0, 260.0)),
        sun_elevation_deg=float(rng.uniform(22.0, max_elevation)),
        season=season,
        haze_per_m=float(rng.uniform(0.002, 0.005) if hazy else rng.uniform(0.0002, 0.0008)),
        brightness=float(rng.uniform(0.75, 1.1)),
        warmth=float(rng.uniform(-0.6, 0.6)),
        texture_offset_m=(float(rng.uniform(0.0, 5000.0)), float(rng.uniform(0.0, 5000.0))),
        # Overcast and hazy days flatten colour; some cameras are set to a muted style.
        saturation=float(rng.uniform(0.75, 1.15)),
        contrast=float(rng.uniform(0.8, 1.1)),
        overcast=float(rng.uniform(0.5, 1.0)) if rng.random() < 0.35 else 0.0,
    )


def _main_roads(
    extent: tuple[float, float, float, float], rng: np.random.Generator
) -> list[Surface]:
    min_e, min_n, max_e, max_n = extent
    roads: list[Surface] = []
    for axis in ("e", "n"):
        position = (min_e if axis == "e" else min_n) + rng.uniform(300.0, 900.0)
        stop = max_e if axis == "e" else max_n
        while position < stop - 200.0:
            width = float(rng.choice([7.0, 9.0, 12.0, 16.0]))
            if axis == "e":
                line = LineString([(position, min_n - 50.0), (position, max_n + 50.0)])
            else:
                line = LineString([(min_e - 50.0, position), (max_e + 50.0, position)])
            roads.append(
                Surface(
                    kind=SurfaceKind.ASPHALT,
                    geometry=line.buffer(width / 2.0, cap_style="flat"),
                    layer=LAYER_LAND,
                    color_rgb=_jitter((78, 80, 84), rng, 6.0),
                )
            )
            position += rng.uniform(900.0, 2200.0)
    return roads


def _village_centres(
    extent: tuple[float, float, float, float], rng: np.random.Generator
) -> tuple[tuple[float, float], ...]:
    min_e, min_n, max_e, max_n = extent
    count = max(2, int((max_e - min_e) * (max_n - min_n) / 3.0e6))
    return tuple(
        (float(rng.uniform(min_e, max_e)), float(rng.uniform(min_n, max_n))) for _ in range(count)
    )


SITE_KIND_WEIGHTS = {
    SiteKind.CONSTRUCTION: 0.4,
    SiteKind.DEMOLITION: 0.15,
    SiteKind.FACTORY: 0.2,
    SiteKind.COAL_YARD: 0.1,
    SiteKind.RESTAURANT: 0.15,
}
SITE_SIZE_M = {
    SiteKind.CONSTRUCTION: (90.0, 320.0),
    SiteKind.DEMOLITION: (60.0, 200.0),
    SiteKind.FACTORY: (90.0, 260.0),
    SiteKind.COAL_YARD: (70.0, 200.0),
    SiteKind.RESTAURANT: (22.0, 45.0),
}


def _place_sites(
    params: DistrictParams,
    extent: tuple[float, float, float, float],
    roads: BaseGeometry,
    environment: Environment,
) -> tuple[list[Site], list[Surface], list[Surface]]:
    rng = _rng(params.seed, "sites")
    min_e, min_n, max_e, max_n = extent
    kinds = list(SITE_KIND_WEIGHTS)
    weights = np.array(list(SITE_KIND_WEIGHTS.values()))
    sites: list[Site] = []
    surfaces: list[Surface] = []
    access_roads: list[Surface] = []
    taken: list[BaseGeometry] = []
    # Sites cluster around the county town (the origin) like real ones do.
    spread = params.extent_m / 4.0
    attempts = 0
    while len(sites) < params.n_sites:
        attempts += 1
        if attempts > params.n_sites * 400:
            raise SimError(
                f"could only place {len(sites)} of {params.n_sites} sites in "
                f"{params.extent_m:.0f} m; increase extent_m"
            )
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        ce = float(np.clip(rng.normal((min_e + max_e) / 2, spread), min_e + 300, max_e - 300))
        cn = float(np.clip(rng.normal((min_n + max_n) / 2, spread), min_n + 300, max_n - 300))
        shape_rng = _rng(params.seed, "site-shape", attempts)
        outline, angle_deg = _site_outline(kind, ce, cn, shape_rng)
        clearance = outline.buffer(25.0)
        if clearance.intersects(roads) or any(clearance.intersects(t) for t in taken):
            continue
        index = len(sites)
        site_id = f"S{index + 1:04d}"
        layout_rng = _rng(params.seed, "site-layout", index)
        compliant = bool(layout_rng.random() < 0.4)
        identity = site_identity(kind, index, _rng(params.seed, "site-name", index))
        site_surfaces, exit_point = _site_layout(
            site_id, kind, outline, angle_deg, compliant, layout_rng
        )
        road = _access_road(exit_point, roads, outline, layout_rng)
        if road is not None and any(road.geometry.intersects(t) for t in taken):
            continue
        sites.append(Site(site_id, kind, outline, identity, compliant))
        surfaces.extend(site_surfaces)
        if road is not None:
            access_roads.append(road)
            taken.append(road.geometry.buffer(10.0))
        taken.append(clearance)
    return sites, surfaces, access_roads


def _rotated_rect(ce: float, cn: float, width: float, height: float, angle_deg: float) -> Polygon:
    rect = box(-width / 2, -height / 2, width / 2, height / 2)
    return affinity.translate(affinity.rotate(rect, angle_deg, origin=(0, 0)), ce, cn)


def _site_outline(
    kind: SiteKind, ce: float, cn: float, rng: np.random.Generator
) -> tuple[Area, float]:
    low, high = SITE_SIZE_M[kind]
    width, height = rng.uniform(low, high), rng.uniform(low, high) * rng.uniform(0.6, 1.0)
    # Most sites follow the north-south street grid; some are turned.
    angle = float(rng.normal(0.0, 4.0) if rng.random() < 0.7 else rng.uniform(-45.0, 45.0))
    rect = box(-width / 2, -height / 2, width / 2, height / 2)
    shape_roll = rng.random()
    outline: BaseGeometry = rect
    if kind is not SiteKind.RESTAURANT and shape_roll < 0.2:  # L-shaped: concave
        notch = box(
            width / 2 - width * rng.uniform(0.3, 0.5),
            height / 2 - height * rng.uniform(0.3, 0.5),
            width / 2,
            height / 2,
        )
        outline = rect.difference(notch)
    elif kind is not SiteKind.RESTAURANT and shape_roll < 0.32:  # an excluded plot inside
        hole_w, hole_h = width * rng.uniform(0.15, 0.25), height * rng.uniform(0.15, 0.25)
        hx, hy = rng.uniform(-width / 5, width / 5), rng.uniform(-height / 5, height / 5)
        outline = rect.difference(box(hx, hy, hx + hole_w, hy + hole_h))
    elif kind is not SiteKind.RESTAURANT and shape_roll < 0.42:  # two parts across a lane
        gap = rng.uniform(8.0, 14.0)
        cut = rng.uniform(-width / 6, width / 6)
        outline = rect.difference(box(cut - gap / 2, -height, cut + gap / 2, height))
    placed = affinity.translate(affinity.rotate(outline, angle, origin=(0, 0)), ce, cn)
    placed = shapely.set_precision(placed, 0.01)
    if not isinstance(placed, Polygon | MultiPolygon):
        raise SimError(f"internal: site outline became {placed.geom_type}")
    return placed, angle


def _blob(
    ce: float,
    cn: float,
    radius: float,
    rng: np.random.Generator,
    elongation: float = 1.0,
    angle_deg: float = 0.0,
) -> Polygon:
    """An irregular patch outline: a circle whose radius carries fractal (1/f) noise.

    Low harmonics make the overall shape lobed, high ones make the edge ragged at the scale
    of decimetres, as the edge of dug or spilt earth is.
    """
    n = max(48, min(240, int(2.0 * math.pi * radius / 0.35)))
    angles = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    harmonics = np.zeros(n)
    for k in range(2, 40):
        amplitude = 0.2 / k**1.15
        harmonics += rng.normal(0.0, amplitude) * np.cos(k * angles + rng.uniform(0, 2 * math.pi))
    radii = radius * np.clip(1.0 + harmonics, 0.45, 1.6)
    xs = radii * np.cos(angles) * elongation
    ys = radii * np.sin(angles)
    shape = Polygon(np.column_stack([xs, ys]))
    rotated = affinity.rotate(shape, angle_deg, origin=(0, 0))
    valid: BaseGeometry = shapely.make_valid(rotated).buffer(0)
    if isinstance(valid, MultiPolygon):  # a pinched outline: keep its largest lobe
        valid = max(valid.geoms, key=lambda g: g.area)
    placed = affinity.translate(valid, ce, cn)
    if not isinstance(placed, Polygon):
        raise SimError(f"internal: a patch outline became {placed.geom_type}")
    return placed


def _wheel_tracks(
    start: tuple[float, float],
    direction_deg: float,
    length_m: float,
    rng: np.random.Generator,
    *,
    pairs: int = 2,
    gauge_m: float = 1.9,
    width_m: float = 0.6,
    film_m: float = 0.5,
) -> tuple[BaseGeometry, BaseGeometry]:
    """Pairs of wavy wheel tracks starting at ``start`` and heading ``direction_deg``
    (counter-clockwise from the local u axis), and the dust film they leave: the ground
    between and beside each pair's wheels, out to ``film_m`` beyond their outer edges."""
    heading = math.radians(direction_deg)
    du, dv = math.cos(heading), math.sin(heading)
    nu, nv = -dv, du
    tracks: list[BaseGeometry] = []
    films: list[BaseGeometry] = []
    for _ in range(pairs):
        lateral = rng.normal(0.0, 1.0)
        drift = rng.normal(0.0, 0.02)
        run = length_m * rng.uniform(0.5, 1.0)
        steps = np.linspace(0.0, run, max(4, int(run / 1.5)))
        wobble = np.cumsum(rng.normal(0.0, 0.05, len(steps))) + drift * steps
        axle = [
            (start[0] + du * t + nu * (lateral + o), start[1] + dv * t + nv * (lateral + o))
            for t, o in zip(steps, wobble, strict=True)
        ]
        films.append(LineString(axle).buffer(gauge_m / 2 + width_m / 2 + film_m, cap_style="round"))
        for side in (-0.5, 0.5):
            offset = lateral + side * gauge_m + wobble
            points = [
                (start[0] + du * t + nu * o, start[1] + dv * t + nv * o)
                for t, o in zip(steps, offset, strict=True)
            ]
            track = LineString(points).buffer(width_m / 2.0, cap_style="round", quad_segs=3)
            tracks.append(track)
    return shapely.union_all(tracks), shapely.union_all(films)


def _clean_area(geometry: BaseGeometry) -> Area | None:
    """A valid polygonal area on a 0.1 mm grid, needle slivers collapsed (UTM metres).

    Differences between many overlapping surfaces leave needle-thin slivers whose vertices,
    once rounded, can cross each other; snapping to a grid with valid output collapses them
    and moves no edge by more than 0.05 mm.
    """
    area = _as_area(shapely.set_precision(shapely.make_valid(geometry), 0.0001))
    if area is None:
        return None
    parts = [p for p in getattr(area, "geoms", [area]) if p.area >= 0.01]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _as_area(geometry: BaseGeometry) -> Area | None:
    """The polygonal part of a geometry, or None when nothing polygonal is left."""
    if geometry.is_empty:
        return None
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    polygons = [
        g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon) and not g.is_empty
    ]
    if not polygons:
        return None
    return MultiPolygon(polygons)


SOIL_COLOURS = (
    (158, 141, 116),  # dry loess
    (134, 119, 99),  # brown earth
    (109, 100, 89),  # damp, greyish
    (140, 121, 102),  # reddish clay
    (133, 125, 116),  # grey fill
)
NET_GREEN = (46, 110, 62)
SITE_GRASS = (42, 46, 35)  # grass and weeds on a plot: untouched corners, regrowth, old fields
NET_BLACK = (52, 52, 50)  # black HDPE, greyed by dust
SITE_GRAVEL = (128, 122, 110)  # packed gravel and hardcore, brown with the site's dust


class _SiteBuilder:
    """Lays out the surfaces of one site in its own rotated frame (u along, v across)."""

    def __init__(
        self,
        site_id: str,
        outline: Area,
        angle_deg: float,
        rng: np.random.Generator,
        tidy: bool,
    ) -> None:
        self.site_id = site_id
        self.tidy = tidy  # a tidy site keeps its nets whole
        self.outline = outline
        self.angle_deg = angle_deg
        self.rng = rng
        self.centre = outline.centroid
        self.surfaces: list[Surface] = []
        self._patch_number = 0
        local = affinity.rotate(
            affinity.translate(outline, -self.centre.x, -self.centre.y), -angle_deg, origin=(0, 0)
        )
        self.local_outline = local
        self.local_bounds: tuple[float, float, float, float] = local.bounds

    def road_dust(
        self,
        fan: BaseGeometry,
        start: tuple[float, float],
        direction_deg: float,
        length_m: float,
        pairs: int,
        road: BaseGeometry,
    ) -> None:
        """Muddy wheel tracks and a spill fan on a paved ``road``, over the dust film the
        wheels spread between and beside their tracks.

        The film is what an inspector outlines as the dirty stretch of road, so it is
        labelled road dust with the tracks: it is visibly browner than the clean paving
        (a third to three fifths of the way from the concrete's colour to the mud's). Its
        width and tone come from a generator of their own, so adding it changed no other
        draw of the district (districts keep their layout from before it existed).
        """
        own = _rng("dust-film", self.site_id, *np.round(self.centre.coords[0], 1))
        reach = float(own.uniform(0.2, 0.9))  # beyond the outer edges of the tracks
        tracks, film = _wheel_tracks(
            start, direction_deg, length_m, self.rng, pairs=pairs, film_m=reach
        )
        share = float(own.uniform(0.35, 0.6))
        concrete, mud = np.array((170, 168, 162)), np.array((122, 102, 80))
        tone = [int(c) for c in np.round(concrete + share * (mud - concrete))]
        self.add(
            SurfaceKind.ROAD_DUST,
            film.intersection(road),
            LAYER_SITE_DETAIL,
            tone,
            GroundTruthClass.ROAD_DUST,
            colour_rng=own,
        )
        self.add(
            SurfaceKind.ROAD_DUST,
            shapely.union(fan, tracks).intersection(road),
            LAYER_SITE_DETAIL,
            (122, 102, 80),
            GroundTruthClass.ROAD_DUST,
        )

    def to_world(self, geometry: BaseGeometry) -> BaseGeometry:
        rotated = affinity.rotate(geometry, self.angle_deg, origin=(0, 0))
        return affinity.translate(rotated, self.centre.x, self.centre.y)

    def add(
        self,
        kind: SurfaceKind,
        local_geometry: BaseGeometry,
        layer: int,
        rgb: Sequence[int],
        gt: GroundTruthClass = GroundTruthClass.BACKGROUND,
        height_m: float = 0.0,
        *,
        relief_m: float = 0.0,
        floating: bool = False,
        min_area_m2: float = 0.5,
        colour_rng: np.random.Generator | None = None,
    ) -> None:
        """Add a surface given in site-local coordinates, clipped to the site outline; its
        colour is ``rgb`` varied by ``colour_rng`` (default: the site's generator)."""
        # Cleaned as the truth is, so that no needle sliver is drawn that the truth drops; a
        # labelled patch also loses strips under 10 cm wide (where a track grazes a road's
        # edge), which the rasteriser draws as a dotted line that the exported truth lacks.
        area = _clean_area(self.to_world(local_geometry).intersection(self.outline))
        if area is not None and gt is not GroundTruthClass.BACKGROUND:
            opened = area.buffer(-0.05, join_style="mitre").buffer(0.05, join_style="mitre")
            area = _clean_area(opened)
        if area is None or area.area < min_area_m2:
            return
        patch_id = None
        if gt is not GroundTruthClass.BACKGROUND:
            self._patch_number += 1
            patch_id = f"{self.site_id}-P{self._patch_number:03d}"
        color = _jitter(rgb, self.rng if colour_rng is None else colour_rng)
        self.surfaces.append(
            Surface(
                kind,
                area,
                layer,
                color,
                gt,
                height_m,
                self.site_id,
                patch_id,
                relief_m=relief_m,
                floating=floating,
            )
        )

    def soil(self) -> tuple[int, int, int]:
        return SOIL_COLOURS[int(self.rng.integers(len(SOIL_COLOURS)))]

    def edge_point(self) -> tuple[float, float]:
        """A random point a few metres inside the (local) bounding box's edge."""
        min_u, min_v, max_u, max_v = self.local_bounds
        rng = self.rng
        side = int(rng.integers(4))
        along = float(rng.uniform(0.1, 0.9))
        u = min_u + along * (max_u - min_u) if side < 2 else (min_u + 3 if side == 2 else max_u - 3)
        v = (
            min_v + along * (max_v - min_v)
            if side >= 2
            else (min_v + 3 if side == 0 else max_v - 3)
        )
        return (u, v)

    def haul_road(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """A curving road of bare earth between two local points, packed and dried paler than
        the ground around it by the trucks (its ruts come from the soil's track texture)."""
        rng = self.rng
        min_u, min_v, max_u, max_v = self.local_bounds
        bend = np.array([rng.uniform(min_u, max_u), rng.uniform(min_v, max_v)])
        t = np.linspace(0.0, 1.0, 32)[:, None]
        a, b = np.array(start), np.array(end)
        curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * bend + t**2 * b
        half_width = rng.uniform(2.5, 4.5)
        road = LineString(curve).buffer(half_width, quad_segs=4)
        pale = float(rng.uniform(1.08, 1.28))
        soil = self.soil()
        rgb = tuple(min(255, round(c * pale)) for c in soil)
        self._verges(curve, half_width, soil)
        self.add(SurfaceKind.BARE_SOIL, road, LAYER_SITE_BLOCK, rgb, GroundTruthClass.EXPOSED_SOIL)
        self._ruts(curve, half_width, rgb, road)

    def _verges(self, curve: NDArray[np.float64], half_width: float, soil: Sequence[int]) -> None:
        """Churned earth along a haul road: ragged strips of darker, unpacked soil that the
        trucks and the grader push aside, thinning out into the weeds a few metres from the
        road (the dark banks beside the pale roads of the reference photos). Bare earth,
        labelled exposed soil; under the road, which is drawn after them. From a generator
        of their own, so the district's other draws are unchanged."""
        own = _rng("verges", self.site_id, *np.round(curve[0], 1))
        if own.random() < 0.25:
            return
        tone = [round(c * float(own.uniform(0.72, 0.92))) for c in soil]
        pieces = []
        for _ in range(int(own.integers(2, 6))):
            at = curve[int(own.integers(len(curve)))]
            pieces.append(
                _blob(
                    float(at[0]),
                    float(at[1]),
                    half_width + float(own.uniform(1.5, 6.0)),
                    own,
                    float(own.uniform(1.2, 2.5)),
                    float(own.uniform(0, 180)),
                )
            )
        self.add(
            SurfaceKind.BARE_SOIL,
            shapely.union_all(pieces),
            LAYER_SITE_BLOCK,
            tone,
            GroundTruthClass.EXPOSED_SOIL,
            colour_rng=own,
        )

    def scatter(self) -> None:
        """What lies about on a plot at the earthworks stage: concrete culvert pipes laid out
        in rows, catch basins and manhole rings, pallets and offcuts, each with its shadow;
        objects, not soil (the truth loses what they cover). From a generator of their own,
        so the district's other draws are unchanged."""
        own = _rng("scatter", self.site_id, *np.round(self.centre.coords[0], 1))
        min_u, min_v, max_u, max_v = self.local_bounds
        concrete = (188, 188, 184)
        for _ in range(int(own.integers(2, 7))):
            u = float(own.uniform(min_u + 5, max_u - 5))
            v = float(own.uniform(min_v + 5, max_v - 5))
            angle = float(own.uniform(0, 180))
            roll = own.random()
            if roll < 0.4:  # culvert pipes side by side, or end to end in a line
                diameter = float(own.uniform(0.6, 1.5))
                length = float(own.uniform(2.0, 2.6))
                side_by_side = own.random() < 0.6
                for k in range(int(own.integers(3, 14))):
                    pipe = (
                        _rotated_rect(u + k * diameter * 1.08, v, diameter, length, 0.0)
                        if side_by_side
                        else _rotated_rect(u, v + k * length * 1.02, diameter, length, 0.0)
                    )
                    self.add(
                        SurfaceKind.PIPES,
                        affinity.rotate(pipe, angle, origin=(u, v)),
                        LAYER_OBJECT,
                        concrete,
                        height_m=diameter,
                        min_area_m2=0.2,
                        colour_rng=own,
                    )
            elif roll < 0.8:  # catch basins and manhole rings strewn over a few metres
                for _ in range(int(own.integers(3, 12))):
                    du, dv = own.normal(0.0, 6.0, 2)
                    size = float(own.uniform(0.9, 1.5))
                    item = (
                        Point(u + du, v + dv).buffer(size / 2, quad_segs=4)
                        if own.random() < 0.4
                        else _rotated_rect(u + du, v + dv, size, size, float(own.uniform(0, 90)))
                    )
                    self.add(
                        SurfaceKind.CONCRETE,
                        item,
                        LAYER_OBJECT,
                        concrete,
                        height_m=float(own.uniform(0.6, 1.2)),
                        min_area_m2=0.2,
                        colour_rng=own,
                    )
            else:  # pallets, boards and offcuts
                for _ in range(int(own.integers(2, 8))):
                    du, dv = own.normal(0.0, 8.0, 2)
                    piece = _rotated_rect(
                        u + du,
                        v + dv,
                        float(own.uniform(0.3, 1.2)),
                        float(own.uniform(0.8, 2.5)),
                        float(own.uniform(0, 180)),
                    )
                    self.add(
                        SurfaceKind.STEEL,
                        piece,
                        LAYER_OBJECT,
                        (150, 120, 80) if own.random() < 0.5 else (206, 204, 198),
                        height_m=0.2,
                        min_area_m2=0.15,
                        colour_rng=own,
                    )

    def _ruts(
        self,
        curve: NDArray[np.float64],
        half_width: float,
        rgb: Sequence[int],
        road: BaseGeometry,
    ) -> None:
        """The wheel paths trucks wear along a haul road: one or two lanes of paired ruts,
        darker than the packed road (compacted, often damp), wandering a little. Bare earth
        like the road, so labelled exposed soil with it: the model must learn that tracked
        earth is soil, not the dust film on paving. Drawn from a generator of their own, so
        the district's other draws are unchanged."""
        own = _rng("ruts", self.site_id, *np.round(curve[0], 1))
        tangent = np.gradient(curve, axis=0)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-9)
        normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
        lanes = [0.0] if half_width < 3.2 or own.random() < 0.4 else [-1.6, 1.6]
        gauge = float(own.uniform(1.8, 2.4))
        shade = float(own.uniform(0.72, 0.88))
        tone = [round(c * shade) for c in rgb]
        ruts: list[BaseGeometry] = []
        for lane in lanes:
            wander = np.cumsum(own.normal(0.0, 0.08, len(curve))) + lane
            for side in (-0.5, 0.5):
                offset = (wander + side * gauge)[:, None]
                line = LineString(curve + normal * offset)
                ruts.append(line.buffer(float(own.uniform(0.35, 0.6)), quad_segs=3))
        self.add(
            SurfaceKind.BARE_SOIL,
            shapely.union_all(ruts).intersection(road),
            LAYER_SITE_BLOCK,  # after the road in its layer: above it, below what comes later
            tone,
            GroundTruthClass.EXPOSED_SOIL,
            colour_rng=own,
        )

    def fill_block(self, choice: str, cell: BaseGeometry) -> None:
        rng = self.rng
        c = cell.centroid
        min_u, min_v, max_u, max_v = cell.bounds
        radius = min(max_u - min_u, max_v - min_v) / 2.0
        if choice == "soil":
            shape = _blob(
                c.x,
                c.y,
                radius * rng.uniform(0.8, 1.15),
                rng,
                rng.uniform(0.9, 1.5),
                float(rng.uniform(0, 180)),
            )
            self.add(
                SurfaceKind.BARE_SOIL,
                shape.intersection(cell.buffer(1.2)),
                LAYER_SITE_BLOCK,
                self.soil(),
                GroundTruthClass.EXPOSED_SOIL,
            )
            if rng.random() < 0.5:  # a spoil heap on the bare ground
                heap = _blob(c.x, c.y, radius * rng.uniform(0.25, 0.45), rng, 1.3)
                self.add(
                    SurfaceKind.SPOIL_HEAP,
                    heap,
                    LAYER_SITE_DETAIL,
                    self.soil(),
                    GroundTruthClass.EXPOSED_SOIL,
                    relief_m=float(rng.uniform(1.5, 4.0)),
                )
        elif choice == "pit":
            pit = _blob(c.x, c.y, radius * rng.uniform(0.6, 0.9), rng, rng.uniform(1.0, 1.6))
            self.add(
                SurfaceKind.PIT,
                pit,
                LAYER_SITE_BLOCK,
                self.soil(),
                GroundTruthClass.EXPOSED_SOIL,
                relief_m=-float(rng.uniform(3.0, 8.0)),
            )
        elif choice in ("net", "covered_pile"):
            self._net(choice == "covered_pile", cell)
        elif choice == "half_covered":  # a heap under net with one end left bare
            heap = _blob(c.x, c.y, radius * 0.8, rng, 1.3, float(rng.uniform(0, 180)))
            relief = float(rng.uniform(2.0, 4.0))
            self.add(
                SurfaceKind.SPOIL_HEAP,
                heap,
                LAYER_SITE_BLOCK,
                self.soil(),
                GroundTruthClass.EXPOSED_SOIL,
                relief_m=relief,
            )
            cut = box(min_u - 5, min_v - 5, c.x + rng.uniform(-0.3, 0.3) * radius, max_v + 5)
            self.add(
                SurfaceKind.NET_GREEN,
                heap.intersection(cut),
                LAYER_SITE_DETAIL,
                NET_GREEN,
                GroundTruthClass.COVERED_SOIL,
                relief_m=relief,
            )
        elif choice == "concrete":
            self.add(SurfaceKind.CONCRETE, cell, LAYER_SITE_BLOCK, (172, 170, 164))
            if rng.random() < 0.3:
                puddle = _blob(
                    c.x, c.y, rng.uniform(1.5, 4.0), rng, 1.6, float(rng.uniform(0, 180))
                )
                self.add(
                    SurfaceKind.WATER, puddle.intersection(cell), LAYER_SITE_DETAIL, (70, 82, 88)
                )
        elif choice == "gravel":
            self.add(SurfaceKind.GRAVEL, cell, LAYER_SITE_BLOCK, SITE_GRAVEL)
        elif choice == "grass":  # an untouched corner of the plot
            self.add(SurfaceKind.GROUND, cell, LAYER_SITE_BLOCK, SITE_GRASS)
        elif choice == "weeds":  # weeds grown back on graded earth, in ragged patches
            for _ in range(int(rng.integers(1, 4))):
                patch = _blob(
                    rng.uniform(min_u, max_u),
                    rng.uniform(min_v, max_v),
                    radius * rng.uniform(0.3, 0.8),
                    rng,
                    rng.uniform(1.0, 2.0),
                    float(rng.uniform(0, 180)),
                )
                self.add(
                    SurfaceKind.GROUND,
                    patch.intersection(cell.buffer(2.0)),
                    LAYER_SITE_BLOCK,
                    SITE_GRASS,
                )
        elif choice == "rubble":
            self.add(SurfaceKind.RUBBLE, cell, LAYER_SITE_BLOCK, (158, 152, 144))
        elif choice == "coal":
            pile = _blob(c.x, c.y, radius * 0.85, rng, 1.2, float(rng.uniform(0, 180)))
            self.add(
                SurfaceKind.COAL,
                pile.intersection(cell),
                LAYER_SITE_BLOCK,
                (34, 34, 36),
                relief_m=float(rng.uniform(2.0, 5.0)),
            )
        elif choice == "frame":
            height = float(rng.uniform(6.0, 30.0))
            self.add(
                SurfaceKind.BUILDING_FRAME,
                cell.buffer(-3.0),
                LAYER_OBJECT,
                (150, 150, 148),
                height_m=height,
            )
        elif choice == "building":
            height = float(rng.uniform(6.0, 14.0))
            self.add(
                SurfaceKind.ROOF_GRAY,
                cell.buffer(-2.0),
                LAYER_OBJECT,
                (104, 118, 140),
                height_m=height,
            )
        elif choice == "materials":
            self.add(SurfaceKind.GRAVEL, cell, LAYER_SITE_BLOCK, SITE_GRAVEL)
            self._materials(cell)
        elif choice == "offices":
            self.add(SurfaceKind.CONCRETE, cell, LAYER_SITE_BLOCK, (168, 166, 160))
            rows = max(1, int((max_v - min_v) // 9.0))
            for row in range(min(rows, 3)):
                v = min_v + 2.0 + row * 9.0
                office = box(min_u + 2.0, v, min(max_u - 2.0, min_u + rng.uniform(18, 40)), v + 6)
                self.add(
                    SurfaceKind.PREFAB_ROOF,
                    office.intersection(cell),
                    LAYER_OBJECT,
                    (52, 96, 168) if rng.random() < 0.8 else (196, 198, 200),
                    height_m=float(rng.choice([3.0, 6.0])),
                )
        elif choice == "turf":  # a green court inside a factory: a net look-alike
            court = cell.buffer(-rng.uniform(2.0, 5.0))
            self.add(SurfaceKind.TURF, court, LAYER_SITE_BLOCK, (58, 128, 76))
        elif choice == "tarp":
            self.add(SurfaceKind.CONCRETE, cell, LAYER_SITE_BLOCK, (168, 166, 160))
            tarp = _rotated_rect(
                c.x, c.y, radius * 1.2, radius * 0.9, float(rng.uniform(0, 180))
            ).intersection(cell)
            self.add(
                SurfaceKind.TARP_BLUE,
                tarp,
                LAYER_SITE_DETAIL,
                (46, 92, 170) if rng.random() < 0.7 else (200, 202, 204),
                relief_m=1.0,
            )
        else:
            raise SimError(f"internal: unknown block kind {choice!r}")

    def _net(self, over_pile: bool, cell: BaseGeometry) -> None:
        """Dust net over a block: sheets, sandbags along the edges, holes on untidy sites."""
        rng = self.rng
        min_u, min_v, max_u, max_v = cell.bounds
        net: BaseGeometry = cell.buffer(-rng.uniform(0.0, 3.0))
        if over_pile:
            net = _blob(
                net.centroid.x,
                net.centroid.y,
                min(max_u - min_u, max_v - min_v) / 2.0 * 0.9,
                rng,
                1.3,
                float(rng.uniform(0, 180)),
            ).intersection(cell)
        black = rng.random() < 0.25
        relief = float(rng.uniform(1.5, 4.0)) if over_pile else 0.0
        self.add(
            SurfaceKind.NET_BLACK if black else SurfaceKind.NET_GREEN,
            net,
            LAYER_SITE_BLOCK,
            NET_BLACK if black else NET_GREEN,
            GroundTruthClass.COVERED_SOIL,
            relief_m=relief,
        )
        if rng.random() < 0.6:  # sandbags or tyres along the net's edge
            edge = net.boundary
            spacing = rng.uniform(2.5, 5.0)
            for distance in np.arange(0.0, edge.length, spacing):
                point = edge.interpolate(float(distance))
                bag = _rotated_rect(point.x, point.y, 0.5, 0.8, float(rng.uniform(0, 180)))
                self.add(
                    SurfaceKind.SANDBAG,
                    bag,
                    LAYER_OBJECT,
                    (150, 146, 130) if rng.random() < 0.7 else (30, 30, 32),
                    height_m=0.3,
                    min_area_m2=0.1,
                )
        if not self.tidy and rng.random() < 0.45:  # torn or wind-lifted: soil shows through
            for _ in range(int(rng.integers(1, 4))):
                hole = _blob(
                    rng.uniform(min_u, max_u),
                    rng.uniform(min_v, max_v),
                    rng.uniform(1.2, 3.5),
                    rng,
                )
                self.add(
                    SurfaceKind.BARE_SOIL,
                    hole.intersection(net),
                    LAYER_SITE_DETAIL,
                    self.soil(),
                    GroundTruthClass.EXPOSED_SOIL,
                )

    def _materials(self, cell: BaseGeometry) -> None:
        """Stacks of pipes, rebar and formwork in rows."""
        rng = self.rng
        min_u, min_v, max_u, max_v = cell.bounds
        for _ in range(int(rng.integers(2, 6))):
            u = rng.uniform(min_u + 3, max_u - 3)
            v = rng.uniform(min_v + 3, max_v - 3)
            angle = float(rng.choice([0.0, 90.0]) + rng.normal(0, 5))
            if rng.random() < 0.55:
                n_pipes = int(rng.integers(4, 14))
                diameter = rng.uniform(0.6, 1.2)
                length = rng.uniform(2.0, 4.0)
                for k in range(n_pipes):
                    pipe = _rotated_rect(u + k * diameter * 1.05, v, diameter, length, 0.0)
                    self.add(
                        SurfaceKind.PIPES,
                        affinity.rotate(pipe, angle, origin=(u, v)),
                        LAYER_OBJECT,
                        (196, 196, 192) if rng.random() < 0.8 else (60, 90, 150),
                        height_m=diameter,
                        min_area_m2=0.2,
                    )
            else:
                stack = _rotated_rect(u, v, rng.uniform(2.0, 4.0), rng.uniform(6.0, 12.0), angle)
                self.add(
                    SurfaceKind.STEEL,
                    stack,
                    LAYER_OBJECT,
                    (96, 70, 58) if rng.random() < 0.6 else (150, 120, 80),
                    height_m=float(rng.uniform(0.4, 1.2)),
                )


SITE_BASE = {
    SiteKind.CONSTRUCTION: (SurfaceKind.GRAVEL, SITE_GRAVEL),
    SiteKind.DEMOLITION: (SurfaceKind.RUBBLE, (150, 146, 138)),
    SiteKind.FACTORY: (SurfaceKind.CONCRETE, (168, 166, 160)),
    SiteKind.COAL_YARD: (SurfaceKind.CONCRETE, (120, 118, 114)),
    SiteKind.RESTAURANT: (SurfaceKind.CONCRETE, (176, 172, 166)),
}


def _site_layout(
    site_id: str,
    kind: SiteKind,
    outline: Area,
    angle_deg: float,
    compliant: bool,
    rng: np.random.Generator,
) -> tuple[list[Surface], tuple[float, float]]:
    """The surfaces inside one site and the point where its exit meets the boundary."""
    site = _SiteBuilder(site_id, outline, angle_deg, rng, tidy=compliant)
    min_u, min_v, max_u, max_v = site.local_bounds
    base_kind, base_rgb = SITE_BASE[kind]
    base_gt = GroundTruthClass.BACKGROUND
    # Unkempt construction sites: 40 % at the earthworks stage (the whole plot graded earth,
    # weeds left in patches), 25 % idle and overgrown (weeds everywhere but the pale dirt roads
    # the trucks keep bare, stacked materials): the two looks of the real reference photos.
    # Other construction sites are on gravel or, 40 % of them, on a former field (weeds).
    works = kind is SiteKind.CONSTRUCTION
    roll = rng.random() if works and not compliant else 1.0
    earthworks, overgrown = roll < 0.4, 0.4 <= roll < 0.65
    if earthworks:
        base_kind, base_rgb, base_gt = (
            SurfaceKind.BARE_SOIL,
            site.soil(),
            GroundTruthClass.EXPOSED_SOIL,
        )
    elif overgrown or (works and rng.random() < 0.4):
        base_kind, base_rgb = SurfaceKind.GROUND, SITE_GRASS
    site.add(
        base_kind,
        box(min_u - 1, min_v - 1, max_u + 1, max_v + 1),
        LAYER_SITE_BASE,
        base_rgb,
        base_gt,
    )

    # The exit is in the middle of the (local) south edge; a paved road leads inside.
    exit_u = (min_u + max_u) / 2.0
    road_width = 7.0 if kind is not SiteKind.RESTAURANT else 4.0
    road_end_v = min_v + (max_v - min_v) * 0.55
    internal_road = box(exit_u - road_width / 2, min_v - 1.0, exit_u + road_width / 2, road_end_v)
    site.add(SurfaceKind.CONCRETE, internal_road, LAYER_SITE_BLOCK, (170, 168, 162))
    exit_world = Point(site.to_world(Point(exit_u, min_v)).coords[0])

    if kind is SiteKind.RESTAURANT:
        building = box(min_u + 3, min_v + (max_v - min_v) * 0.45, max_u - 3, max_v - 3)
        red = rng.random() < 0.5
        site.add(
            SurfaceKind.ROOF_RED if red else SurfaceKind.ROOF_GRAY,
            building,
            LAYER_OBJECT,
            (150, 70, 56) if red else (110, 112, 118),
            height_m=5.0,
        )
        if not compliant:
            fan = _blob(exit_u, min_v + 3.0, rng.uniform(1.5, 2.5), rng, 1.8, 0.0)
            site.road_dust(fan, (exit_u, min_v), 90.0, max_v - min_v, 1, internal_road)
        return site.surfaces, (exit_world.x, exit_world.y)

    # Blocks on a grid, leaving the internal road free.
    block = rng.uniform(28.0, 55.0)
    n_u = max(1, int((max_u - min_u) // block))
    n_v = max(1, int((max_v - min_v) // block))
    du, dv = (max_u - min_u) / n_u, (max_v - min_v) / n_v
    shares = (
        EARTHWORKS_SHARES
        if earthworks
        else OVERGROWN_SHARES
        if overgrown
        else _block_shares(kind, compliant)
    )
    names = list(shares)
    probs = np.array([shares[n] for n in names])
    road_margin = internal_road.buffer(1.5)
    for iu in range(n_u):
        for iv in range(n_v):
            cell = box(
                min_u + iu * du + 2.0,
                min_v + iv * dv + 2.0,
                min_u + (iu + 1) * du - 2.0,
                min_v + (iv + 1) * dv - 2.0,
            )
            cell_area = cell.difference(road_margin)
            if cell_area.area < 40.0:
                continue
            site.fill_block(names[int(rng.choice(len(names), p=probs / probs.sum()))], cell_area)

    dusty_kinds = (SiteKind.CONSTRUCTION, SiteKind.DEMOLITION, SiteKind.COAL_YARD)
    if earthworks or overgrown or (not compliant and kind in dusty_kinds and rng.random() < 0.6):
        # Haul roads of bare earth from the paved road into the works; on graded earth more
        # of them wind across the plot (the pale curving dirt roads of the reference photos).
        start = (exit_u, road_end_v - 2.0)
        end = (rng.uniform(min_u + 10, max_u - 10), rng.uniform(road_end_v, max_v - 8))
        site.haul_road(start, end)
        for _ in range(int(rng.integers(1, 3)) if earthworks or overgrown else 0):
            site.haul_road(site.edge_point(), site.edge_point())
    if earthworks or overgrown:
        site.scatter()

    for _ in range(int(rng.integers(0, 4))):  # excavators, loaders and muck trucks
        u, v = rng.uniform(min_u + 8, max_u - 8), rng.uniform(min_v + 8, max_v - 8)
        heavy = rng.random() < 0.6
        width, length = (3.2, 7.0) if heavy else (2.5, 8.5)
        vehicle = _rotated_rect(u, v, width, length, float(rng.uniform(0, 180)))
        site.add(
            SurfaceKind.MACHINERY if heavy else SurfaceKind.TRUCK,
            vehicle,
            LAYER_OBJECT,
            (214, 170, 40) if heavy else (60, 96, 160),
            height_m=3.0,
        )

    if kind is SiteKind.CONSTRUCTION and rng.random() < 0.6:  # a tower crane
        mast_u, mast_v = rng.uniform(min_u + 15, max_u - 15), rng.uniform(min_v + 15, max_v - 15)
        mast_height = float(rng.uniform(35.0, 60.0))
        jib_angle = float(rng.uniform(0, 360))
        jib_length = float(rng.uniform(40.0, 60.0))
        site.add(
            SurfaceKind.CRANE,
            box(mast_u - 1.0, mast_v - 1.0, mast_u + 1.0, mast_v + 1.0),
            LAYER_OBJECT,
            (220, 176, 40),
            height_m=mast_height,
        )
        jib = affinity.rotate(
            box(mast_u - 12.0, mast_v - 0.7, mast_u + jib_length, mast_v + 0.7),
            jib_angle,
            origin=(mast_u, mast_v),
        )
        site.add(
            SurfaceKind.CRANE,
            jib,
            LAYER_OBJECT,
            (220, 176, 40),
            height_m=mast_height,
            floating=True,
        )

    if not compliant and kind in dusty_kinds and rng.random() < 0.8:
        # Muddy wheel tracks and a spill fan from the works to the gate, on the paved road.
        fan = _blob(
            exit_u + rng.normal(0, 1.0), min_v + rng.uniform(2.0, 5.0), rng.uniform(2.0, 4.5), rng
        )
        pairs = int(rng.integers(1, 4))
        site.road_dust(fan, (exit_u, road_end_v), -90.0, road_end_v - min_v, pairs, internal_road)

    if kind in (SiteKind.CONSTRUCTION, SiteKind.DEMOLITION, SiteKind.COAL_YARD):
        # Hoarding panels along the whole boundary but the gate, where a wheel-wash bay is.
        ring = site.local_outline.difference(site.local_outline.buffer(-0.35))
        gate = box(
            exit_u - road_width / 2 - 1.0, min_v - 2.0, exit_u + road_width / 2 + 1.0, min_v + 3.0
        )
        blue = rng.random() < 0.7
        site.add(
            SurfaceKind.HOARDING,
            ring.difference(gate),
            LAYER_OBJECT,
            (44, 96, 176) if blue else (210, 212, 214),
            height_m=float(rng.uniform(2.0, 2.8)),
        )
        if rng.random() < 0.6:
            wash = box(exit_u - road_width / 2, min_v + 3.0, exit_u + road_width / 2, min_v + 9.0)
            site.add(SurfaceKind.WATER, wash, LAYER_SITE_DETAIL, (78, 88, 90))
    return site.surfaces, (exit_world.x, exit_world.y)


# A construction site at the earthworks stage: graded earth between heaps, pits, weeds, nets
# and stacked materials (the block kinds drawn on its bare base).
EARTHWORKS_SHARES = {
    "soil": 0.16,
    "weeds": 0.26,
    "pit": 0.1,
    "net": 0.18,
    "half_covered": 0.05,
    "materials": 0.13,
    "offices": 0.05,
    "frame": 0.07,
}

# An idle construction site grown over: weeds, stacked pipes and materials, a few bare
# patches and heaps between the haul roads.
OVERGROWN_SHARES = {
    "weeds": 0.5,
    "materials": 0.22,
    "soil": 0.12,
    "net": 0.08,
    "offices": 0.04,
    "pit": 0.04,
}


def _block_shares(kind: SiteKind, compliant: bool) -> dict[str, float]:
    if kind is SiteKind.CONSTRUCTION:
        if compliant:
            return {
                "net": 0.4,
                "covered_pile": 0.08,
                "concrete": 0.12,
                "frame": 0.2,
                "gravel": 0.06,
                "materials": 0.09,
                "offices": 0.05,
            }
        return {
            "soil": 0.28,
            "grass": 0.06,
            "pit": 0.08,
            "net": 0.2,
            "half_covered": 0.06,
            "concrete": 0.06,
            "frame": 0.14,
            "materials": 0.1,
            "offices": 0.04,
            "gravel": 0.04,
        }
    if kind is SiteKind.DEMOLITION:
        if compliant:
            return {"net": 0.45, "covered_pile": 0.1, "rubble": 0.3, "gravel": 0.15}
        return {"soil": 0.3, "net": 0.2, "half_covered": 0.08, "rubble": 0.32, "gravel": 0.1}
    if kind is SiteKind.FACTORY:
        if compliant:
            return {"building": 0.4, "concrete": 0.33, "net": 0.1, "turf": 0.09, "tarp": 0.08}
        return {
            "building": 0.35,
            "concrete": 0.28,
            "soil": 0.15,
            "net": 0.08,
            "turf": 0.07,
            "tarp": 0.07,
        }
    if compliant:  # coal yard
        return {"covered_pile": 0.5, "concrete": 0.25, "building": 0.15, "tarp": 0.1}
    return {"coal": 0.35, "covered_pile": 0.25, "soil": 0.15, "concrete": 0.17, "tarp": 0.08}


def _access_road(
    exit_point: tuple[float, float], roads: BaseGeometry, outline: Area, rng: np.random.Generator
) -> Surface | None:
    """A concrete road from the site exit straight to the nearest main road."""
    start = Point(exit_point)
    link = shapely.shortest_line(start, roads)
    if link is None or link.length > 1500.0:
        return None
    road_e, road_n = link.coords[-1]
    path = LineString([(start.x, start.y), (road_e, start.y), (road_e, road_n)])
    geometry = path.buffer(3.0, cap_style="flat", join_style="mitre").difference(outline)
    area = _as_area(geometry)
    if area is None:
        return None
    return Surface(SurfaceKind.CONCRETE, area, LAYER_LAND, _jitter((160, 158, 152), rng, 6.0))


def _visible_patches(surfaces: Sequence[Surface]) -> list[Patch]:
    """Ground-truth patches minus whatever is drawn over them in the same site.

    Drawing order is by layer, and within a layer by creation order (the sort is stable).
    """
    by_site: dict[str, list[Surface]] = {}
    for surface in surfaces:
        if surface.site_id is not None:
            by_site.setdefault(surface.site_id, []).append(surface)
    patches: list[Patch] = []
    for site_surfaces in by_site.values():
        for position, surface in enumerate(site_surfaces):
            if surface.patch_id is None or surface.site_id is None:
                continue
            above = [
                s.geometry
                for later, s in enumerate(site_surfaces)
                if s.layer > surface.layer or (s.layer == surface.layer and later > position)
            ]
            visible = (
                surface.geometry.difference(shapely.union_all(above)) if above else surface.geometry
            )
            area = _clean_area(visible)
            if area is not None and area.area >= 0.5:
                patches.append(Patch(surface.patch_id, surface.site_id, surface.gt_class, area))
    return patches


# ---------------------------------------------------------------------------------------------
# the countryside, generated per cell on demand


# Grass and weeds between fields and on idle plots: dull olive, as in the real reference
# photos (measured with `sim compare`), greener in spring, straw and bare in autumn and winter.
SEASON_GROUND = {
    Season.SPRING: (43, 47, 36),
    Season.SUMMER: (38, 41, 33),
    Season.AUTUMN: (69, 64, 51),
    Season.WINTER: (72, 67, 60),
}
SEASON_CROP = {
    Season.SPRING: (96, 138, 62),
    Season.SUMMER: (62, 118, 52),
    Season.AUTUMN: (170, 150, 86),
    Season.WINTER: (104, 120, 70),  # winter wheat seedlings
}
SEASON_TREE = {
    Season.SPRING: (54, 73, 47),
    Season.SUMMER: (37, 54, 36),
    Season.AUTUMN: (76, 68, 46),
    Season.WINTER: (61, 56, 49),
}


class CellCache:
    """Generated countryside cells of one district, least recently used evicted."""

    def __init__(self, district: District, max_cells: int = 2048) -> None:
        self.district = district
        self.max_cells = max_cells
        self._cells: dict[tuple[int, int], tuple[Surface, ...]] = {}

    def __call__(self, i: int, j: int) -> tuple[Surface, ...]:
        key = (i, j)
        cached = self._cells.pop(key, None)
        if cached is None:
            cached = _generate_cell(self.district, i, j)
            if len(self._cells) >= self.max_cells:
                self._cells.pop(next(iter(self._cells)))
        self._cells[key] = cached
        return cached


def _generate_cell(district: District, i: int, j: int) -> tuple[Surface, ...]:
    rng = _rng(district.params.seed, "cell", i, j)
    cell = box(*_cell_box(i, j))
    season = district.environment.season
    blocked_hits = district._blocked.query(cell.buffer(6.0), predicate="intersects")
    blocked_geoms = [district._blocked.geometries[int(k)] for k in blocked_hits]
    blocked = shapely.union_all([g.buffer(4.0) for g in blocked_geoms]) if blocked_geoms else None
    centre = cell.centroid
    near_village = (
        min(
            (math.hypot(centre.x - ve, centre.y - vn) for ve, vn in district.village_centres),
            default=1e9,
        )
        < 420.0
    )
    raw: list[tuple[SurfaceKind, BaseGeometry, int, Sequence[int], float]] = []
    if near_village:
        raw.append((SurfaceKind.COURTYARD, cell, LAYER_LAND, (150, 140, 124), 0.0))
        min_e, min_n = cell.bounds[:2]
        # Houses in rows facing south, as in the north China plain.
        for row in range(int(CELL_SIZE_M // 26)):
            for col in range(int(CELL_SIZE_M // 22)):
                if rng.random() < 0.25:
                    continue
                e = min_e + col * 22.0 + rng.uniform(1.0, 4.0)
                n = min_n + row * 26.0 + rng.uniform(1.0, 4.0)
                w, h = rng.uniform(12.0, 18.0), rng.uniform(7.0, 10.0)
                roof_kind = SurfaceKind(
                    int(
                        rng.choice(
                            [SurfaceKind.ROOF_RED, SurfaceKind.ROOF_BROWN, SurfaceKind.ROOF_GRAY],
                            p=[0.4, 0.35, 0.25],
                        )
                    )
                )
                roof_rgb = {
                    SurfaceKind.ROOF_RED: (158, 74, 58),
                    SurfaceKind.ROOF_BROWN: (128, 92, 66),
                    SurfaceKind.ROOF_GRAY: (112, 114, 120),
                }[roof_kind]
                raw.append(
                    (
                        roof_kind,
                        box(e, n, e + w, n + h),
                        LAYER_OBJECT,
                        roof_rgb,
                        float(rng.uniform(3.5, 7.0)),
                    )
                )
                if rng.random() < 0.3:
                    tree = Point(e + w + 2.0, n + h + 3.0).buffer(
                        rng.uniform(2.0, 3.5), quad_segs=4
                    )
                    raw.append((SurfaceKind.TREE, tree, LAYER_OBJECT, SEASON_TREE[season], 8.0))
    else:
        min_e, min_n, max_e, max_n = cell.bounds
        raw.append((SurfaceKind.GROUND, cell, LAYER_LAND, SEASON_GROUND[season], 0.0))
        n = min_n
        while n < max_n:
            width = rng.uniform(18.0, 60.0)
            strip = box(min_e, n, max_e, min(n + width, max_n))
            roll = rng.random()
            if roll < 0.22:
                raw.append((SurfaceKind.PLOWED_FIELD, strip, LAYER_LAND, (136, 108, 80), 0.0))
            elif roll < 0.32 and season in (Season.SUMMER, Season.AUTUMN):
                raw.append((SurfaceKind.STUBBLE, strip, LAYER_LAND, (176, 160, 112), 0.0))
            elif roll < 0.38:  # greenhouses in rows
                for e in np.arange(min_e + 2.0, max_e - 6.0, rng.uniform(9.0, 12.0)):
                    house = box(float(e), n + 1.5, float(e) + 7.5, min(n + width, max_n) - 1.5)
                    raw.append((SurfaceKind.GREENHOUSE, house, LAYER_OBJECT, (206, 210, 208), 2.5))
            elif roll < 0.41:  # a solar farm
                for row_n in np.arange(n + 1.0, min(n + width, max_n) - 3.0, 6.0):
                    panel = box(min_e + 3.0, float(row_n), max_e - 3.0, float(row_n) + 3.2)
                    raw.append((SurfaceKind.SOLAR_PANEL, panel, LAYER_OBJECT, (44, 52, 74), 1.6))
            elif roll < 0.85:
                raw.append((SurfaceKind.CROP, strip, LAYER_LAND, SEASON_CROP[season], 0.0))
            if rng.random() < 0.35:  # a farm track of bare earth along the field edge
                track = box(min_e, n - 1.5, max_e, n + 1.5)
                raw.append((SurfaceKind.DIRT_TRACK, track, LAYER_LAND, (150, 126, 96), 0.0))
            if rng.random() < 0.25:  # a row of poplars along the field edge
                for e in np.arange(min_e + rng.uniform(0, 6), max_e, rng.uniform(5.0, 8.0)):
                    canopy = Point(float(e), n + rng.normal(0, 0.5)).buffer(
                        rng.uniform(2.0, 3.2), quad_segs=4
                    )
                    raw.append(
                        (
                            SurfaceKind.TREE,
                            canopy,
                            LAYER_OBJECT,
                            SEASON_TREE[season],
                            float(rng.uniform(8, 14)),
                        )
                    )
            n += width
        roll = rng.random()
        if roll < 0.04:
            pond = _blob(
                centre.x, centre.y, rng.uniform(10.0, 30.0), rng, 1.4, float(rng.uniform(0, 180))
            )
            raw.append((SurfaceKind.WATER, pond, LAYER_LAND, (62, 78, 84), 0.0))
        elif roll < 0.08:  # a dry riverbed of sand winding across the cell
            e = min_e + rng.uniform(40, 210)
            bed = LineString(
                [(e + rng.normal(0, 25), y) for y in np.linspace(min_n - 5, max_n + 5, 9)]
            ).buffer(rng.uniform(6.0, 18.0))
            raw.append((SurfaceKind.SAND, bed, LAYER_LAND, (190, 176, 146), 0.0))
        elif roll < 0.11:  # a school sports ground: red track around green turf
            field_box = _rotated_rect(
                centre.x, centre.y, rng.uniform(90, 120), rng.uniform(50, 70), rng.normal(0, 5)
            )
            raw.append((SurfaceKind.RUNNING_TRACK, field_box, LAYER_LAND, (168, 72, 60), 0.0))
            raw.append((SurfaceKind.TURF, field_box.buffer(-7.0), LAYER_LAND, (62, 132, 70), 0.0))
    if near_village and rng.random() < 0.3:  # blue tarps over a heap of something
        for _ in range(int(rng.integers(1, 4))):
            tarp = _rotated_rect(
                rng.uniform(cell.bounds[0], cell.bounds[2]),
                rng.uniform(cell.bounds[1], cell.bounds[3]),
                rng.uniform(3.0, 8.0),
                rng.uniform(3.0, 10.0),
                float(rng.uniform(0, 180)),
            )
            raw.append((SurfaceKind.TARP_BLUE, tarp, LAYER_OBJECT, (46, 92, 170), 0.5))
    surfaces: list[Surface] = []
    for kind, geometry, layer, rgb, height in raw:
        clipped = geometry.intersection(cell)
        if blocked is not None:
            clipped = clipped.difference(blocked)
        area = _as_area(clipped)
        if area is not None and area.area >= 0.5:
            surfaces.append(Surface(kind, area, layer, _jitter(rgb, rng, 8.0), height_m=height))
    return tuple(surfaces)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1-60"``, ``"3,5,9"`` or a mix (``"1-10,20"``) as a tuple of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise SimError(f"seed range {part!r} runs backwards")
                seeds.extend(range(low, high + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise SimError(
            f"cannot read seeds {text!r}: give a range such as 1-60 or a list such as 1,2,5"
        ) from None
    if not seeds:
        raise SimError("no seeds given: pass a range such as --seeds 1-60")
    return tuple(dict.fromkeys(seeds))
