"""The vocabularies of the simulated district: site kinds, surface kinds, ground-truth classes."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class SiteKind(StrEnum):
    CONSTRUCTION = "construction"
    DEMOLITION = "demolition"
    FACTORY = "factory"
    COAL_YARD = "coal_yard"
    RESTAURANT = "restaurant"


class GroundTruthClass(IntEnum):
    """Per-pixel ground truth. The values are the class ids written into masks."""

    BACKGROUND = 0
    EXPOSED_SOIL = 1
    ROAD_DUST = 2
    COVERED_SOIL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class SurfaceKind(IntEnum):
    """How a surface looks. Values index the appearance tables of `sim.appearance`."""

    GROUND = 0  # grass and dirt between everything else
    BARE_SOIL = 1
    NET_GREEN = 2
    NET_BLACK = 3
    ROAD_DUST = 4
    ASPHALT = 5
    CONCRETE = 6
    GRAVEL = 7
    BUILDING_FRAME = 8
    ROOF_RED = 9
    ROOF_BROWN = 10
    ROOF_GRAY = 11
    MACHINERY = 12
    TRUCK = 13
    WATER = 14
    TREE = 15
    CROP = 16
    PLOWED_FIELD = 17
    COAL = 18
    RUBBLE = 19
    COURTYARD = 20


class Season(StrEnum):
    SPRING = "spring"
    SUMMER = "summer"
    AUTUMN = "autumn"
    WINTER = "winter"


class GnssMode(StrEnum):
    """Position solution quality of a simulated frame, as DJI's ``RtkFlag`` reports it."""

    PERFECT = "perfect"  # metadata equals the true pose: for exactness tests only
    RTK_FIXED = "rtk_fixed"
    RTK_FLOAT = "rtk_float"
    SINGLE = "single"

    @property
    def rtk_flag(self) -> int:
        """DJI XMP ``RtkFlag``: 50 fixed, 34 float, 16 single point."""
        return {"perfect": 50, "rtk_fixed": 50, "rtk_float": 34, "single": 16}[self.value]
