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
    """Per-pixel ground truth. The values are the class ids written into masks.

    What each class means (the model card repeats this; labels are what is *visible*):

    * ``exposed_soil`` -- bare earth inside a site that is not under dust net, vegetation or
      a hard surface: graded ground, haul roads of earth, spoil heaps, excavation floors and
      walls, soil showing through a torn hole or under a lifted net edge, the uncovered part
      of a half-covered heap. Sparse weeds on bare earth still count; a lawn with a few bare
      spots does not.
    * ``road_dust`` -- soil or dust carried onto a hard surface (concrete, asphalt): the muddy
      wheel tracks and spill fans that run from a site gate along its road, with the browner
      film of dust the wheels spread between and beside their tracks: the dirty stretch of
      road as an inspector outlines it, not each tyre print.
    * ``covered_soil`` -- earth under dust net (green or black HDPE mesh), including where the
      net is slack, faded, patched or weighted with sandbags; compliant, counted for coverage.
    * ``background`` -- everything else, including look-alikes that are not a site's soil:
      ploughed and harvested fields, farm dirt tracks, sand, artificial turf and green
      courts, tarps, greenhouse film, roofs, water and shadows on any of these.
    """

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
    SPOIL_HEAP = 21  # loose soil piled up: exposed soil with relief
    PIT = 22  # an excavation: soil below the ground, its walls in shade
    HOARDING = 23  # blue/white site hoarding panels (围挡) along the boundary
    PREFAB_ROOF = 24  # blue-roofed prefab site offices (板房)
    PIPES = 25  # stacked concrete or plastic pipes
    STEEL = 26  # rebar and formwork stacks
    CRANE = 27  # tower crane jib and mast
    TURF = 28  # artificial turf and green-painted courts: look like dust net, are not
    RUNNING_TRACK = 29
    TARP_BLUE = 30
    GREENHOUSE = 31  # plastic film over hoops, in long rows
    SOLAR_PANEL = 32
    DIRT_TRACK = 33  # farm tracks of bare earth outside sites
    SAND = 34  # dry riverbeds, sand arenas
    SANDBAG = 35  # weights along the edges of a net
    STUBBLE = 36  # harvested fields


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
