"""Coordinate reference systems: WGS84 for storage, a local UTM zone for metres, GCJ-02 input.

Areas and distances are always computed in a projected CRS (`utm_crs_for`); EPSG:4326 is for
storage and exchange only.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from geo.errors import GeoError

WGS84 = CRS.from_epsg(4326)

FloatArray = NDArray[np.float64]


class CrsError(GeoError):
    """A coordinate reference system is missing, unknown or unsuitable."""


@lru_cache(maxsize=64)
def utm_crs_for(lon_deg: float, lat_deg: float) -> CRS:
    """The WGS84 UTM zone CRS (EPSG:326xx north, 327xx south) containing the point."""
    if not -80.0 <= lat_deg <= 84.0:
        raise CrsError(f"latitude {lat_deg} is outside the UTM range (-80..84)")
    if not -180.0 <= lon_deg <= 180.0:
        raise CrsError(f"longitude {lon_deg} must be within -180..180")
    zone = min(int((lon_deg + 180.0) // 6.0) + 1, 60)
    return CRS.from_epsg((32600 if lat_deg >= 0 else 32700) + zone)


@lru_cache(maxsize=64)
def transformer(source: CRS, target: CRS) -> Transformer:
    """A cached always-xy (lon/lat, east/north) transformer."""
    return Transformer.from_crs(source, target, always_xy=True)


def transform_geometry(geometry: BaseGeometry, source: CRS, target: CRS) -> BaseGeometry:
    """``geometry`` with every vertex moved from ``source`` to ``target``: parts and holes
    included."""
    moving = transformer(source, target)

    def convert(coords: FloatArray) -> FloatArray:
        x, y = moving.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    moved: BaseGeometry = shapely.transform(geometry, convert)
    return moved


def parse_crs(text: str) -> CRS:
    """A CRS from user input such as ``EPSG:4547`` or ``4326``; raises `CrsError` if unknown."""
    try:
        return CRS.from_user_input(int(text) if text.isdigit() else text)
    except Exception as exc:  # pyproj raises CRSError, a plain Exception subclass
        raise CrsError(f"unknown CRS {text!r}: {exc}; give an EPSG code like EPSG:4326") from None


# GCJ-02 ("Mars coordinates"), the obfuscated datum of Chinese map services (AMap, Tencent).
# The published forward algorithm on the Krasovsky ellipsoid; the inverse is iterated.
_GCJ_A = 6378245.0
_GCJ_EE = 0.00669342162296594323


def _outside_china(lon: FloatArray, lat: FloatArray) -> NDArray[np.bool_]:
    return np.asarray((lon < 72.004) | (lon > 137.8347) | (lat < 0.8293) | (lat > 55.8271))


def _gcj_offsets(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    x, y = lon - 105.0, lat - 35.0
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    d_lat += (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    d_lat += (20.0 * np.sin(y * math.pi) + 40.0 * np.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    d_lat += (160.0 * np.sin(y / 12.0 * math.pi) + 320 * np.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    d_lon += (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    d_lon += (20.0 * np.sin(x * math.pi) + 40.0 * np.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    d_lon += (150.0 * np.sin(x / 12.0 * math.pi) + 300.0 * np.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    rad_lat = lat / 180.0 * math.pi
    magic = 1.0 - _GCJ_EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_GCJ_A * (1 - _GCJ_EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(rad_lat) * math.pi)
    return d_lon, d_lat


def wgs84_to_gcj02(lon_deg: FloatArray, lat_deg: FloatArray) -> tuple[FloatArray, FloatArray]:
    """WGS84 → GCJ-02 (degrees). Points outside China are returned unchanged."""
    lon = np.asarray(lon_deg, dtype=np.float64)
    lat = np.asarray(lat_deg, dtype=np.float64)
    d_lon, d_lat = _gcj_offsets(lon, lat)
    outside = _outside_china(lon, lat)
    return np.where(outside, lon, lon + d_lon), np.where(outside, lat, lat + d_lat)


def gcj02_to_wgs84(lon_deg: FloatArray, lat_deg: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 → WGS84 (degrees), inverting the forward transform to better than 1e-9°."""
    target_lon = np.asarray(lon_deg, dtype=np.float64)
    target_lat = np.asarray(lat_deg, dtype=np.float64)
    lon, lat = target_lon.copy(), target_lat.copy()
    for _ in range(30):
        forward_lon, forward_lat = wgs84_to_gcj02(lon, lat)
        err_lon, err_lat = forward_lon - target_lon, forward_lat - target_lat
        lon, lat = lon - err_lon, lat - err_lat
        if (
            max(
                float(np.max(np.abs(err_lon), initial=0)), float(np.max(np.abs(err_lat), initial=0))
            )
            < 1e-11
        ):
            break
    return lon, lat
