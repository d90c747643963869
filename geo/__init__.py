"""Geospatial core: CRS helpers, frame metadata, georeferencing, site registries, matching.

A leaf package: it never imports ``vision``; masks arrive as pixel polygons (numpy arrays).
"""

from geo.errors import GeoError

__all__ = ["GeoError"]
