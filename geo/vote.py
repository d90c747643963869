"""The outline of a patch seen by several frames: the ground that a share of the frames which
saw it called this class, not the union of every frame's outline.

Every frame's outline of a patch differs a little: the detector draws the edge a pixel or two
in or out, and each frame's position error shifts it. The union of all of them holds every
frame's widest guess and every frame's shift, so it grows with the number of frames (areas
too large, more so the worse the positions). A vote asks, at each point of the ground, how
many of the frames whose footprint covered it saw the class there, and keeps the points where
at least ``share`` of them did.

The vote runs on a raster (`VOTE_CELL_M`, coarser for very large patches) and its result is cut
from the union, so the outer edges that the frames agree on stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from geo.errors import GeoError

VOTE_CELL_M = 0.1  # the analysis ground resolution: finer says nothing the frames did
MAX_CELLS = 4096  # per side of the raster; a larger patch is voted on coarser cells
_SUBPIXEL = 16  # cv2.fillPoly's fixed-point factor (shift=4)


def _rings(geometry: BaseGeometry) -> list[list[NDArray[np.float64]]]:
    """The rings (exterior first) of each polygon of ``geometry``."""
    polygons = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon)]
    return [
        [np.asarray(p.exterior.coords), *(np.asarray(r.coords) for r in p.interiors)]
        for p in polygons
        if not p.is_empty
    ]


class _Grid:
    def __init__(self, bounds: tuple[float, float, float, float], cell_m: float) -> None:
        min_x, min_y, max_x, max_y = bounds
        self.cell = max(cell_m, (max_x - min_x) / MAX_CELLS, (max_y - min_y) / MAX_CELLS)
        self.min_x = min_x - self.cell
        self.max_y = max_y + self.cell
        self.width = math.ceil((max_x - min_x) / self.cell) + 2
        self.height = math.ceil((max_y - min_y) / self.cell) + 2

    def fill(self, geometry: BaseGeometry) -> NDArray[np.uint8]:
        """1 where ``geometry`` covers a cell's centre (holes left empty)."""
        mask = np.zeros((self.height, self.width), dtype=np.uint8)
        for rings in _rings(geometry):
            part = np.zeros_like(mask)
            pixels = [
                np.round(
                    np.column_stack(
                        (
                            (r[:, 0] - self.min_x) / self.cell - 0.5,
                            (self.max_y - r[:, 1]) / self.cell - 0.5,
                        )
                    )
                    * _SUBPIXEL
                ).astype(np.int32)
                for r in rings
            ]
            cv2.fillPoly(part, pixels, 1, cv2.LINE_8, 4)  # even-odd: holes stay empty
            mask |= part
        return mask

    def outline(self, mask: NDArray[np.bool_]) -> BaseGeometry:
        """The cells of ``mask`` as polygons in ground coordinates (cell edges, not centres)."""
        contours, hierarchy = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
        )
        if not contours:
            return Polygon()

        def ground(contour: NDArray[Any]) -> NDArray[np.float64]:
            points = contour.reshape(-1, 2).astype(np.float64)
            return np.column_stack(
                (
                    self.min_x + (points[:, 0] + 0.5) * self.cell,
                    self.max_y - (points[:, 1] + 0.5) * self.cell,
                )
            )

        polygons = []
        for index, contour in enumerate(contours):
            if hierarchy[0][index][3] != -1:
                continue  # a hole: added to its outer ring below
            holes = []
            child = hierarchy[0][index][2]
            while child != -1:
                if len(contours[child]) >= 3:
                    holes.append(ground(contours[child]))
                child = hierarchy[0][child][0]
            points = ground(contour)
            # A contour runs through the centres of the region's edge cells: half a cell out
            # gives the cells' own edges. The band along it keeps one-cell-wide parts, which
            # have no area as a polygon.
            band: BaseGeometry
            if len(points) == 1:
                band = shapely.Point(points[0])
            else:
                band = shapely.LineString(np.vstack([points, points[:1]]))
            polygons.append(band.buffer(self.cell / 2, cap_style="square", join_style="mitre"))
            if len(points) >= 3:
                body = shapely.make_valid(Polygon(points, holes))
                polygons.append(body.buffer(self.cell / 2, join_style="mitre"))
        return shapely.union_all(polygons)


def voted_outline(
    outlines: Sequence[tuple[str, BaseGeometry]],
    footprints: Mapping[str, BaseGeometry],
    share: float,
    cell_m: float = VOTE_CELL_M,
) -> Polygon | MultiPolygon:
    """Where at least ``share`` of the frames that saw the ground called it this class.

    ``outlines``: (frame id, outline) of every observation of one patch; ``footprints``: the
    ground each frame saw, by frame id. A frame without a footprint counts only where it saw
    the class (it cannot say where it did not). Empty when no point gets enough votes.
    """
    if not 0.0 < share <= 1.0:
        raise GeoError(f"vote share must be in (0, 1], got {share}")
    union = shapely.union_all([geometry for _, geometry in outlines])
    if union.is_empty:
        return Polygon()
    grid = _Grid(union.bounds, cell_m)
    window = box(*union.bounds).buffer(2 * grid.cell, join_style="mitre")
    by_frame: dict[str, list[BaseGeometry]] = {}
    for frame_id, geometry in outlines:
        by_frame.setdefault(frame_id, []).append(geometry)
    # every frame that saw the place votes, those that found nothing there too
    names = list(footprints)
    shapes = np.asarray([footprints[name] for name in names], dtype=object)
    over = {names[i] for i in np.flatnonzero(shapely.intersects(shapes, union))} if names else set()
    seen_it = np.zeros((grid.height, grid.width), dtype=np.uint16)
    saw_there = np.zeros_like(seen_it)
    for frame_id in sorted(over | set(by_frame)):
        parts = by_frame.get(frame_id)
        found = grid.fill(shapely.union_all(parts)) if parts else None
        footprint = footprints.get(frame_id)
        if footprint is None:
            covered = found  # it cannot say where it did not look
        else:
            covered = grid.fill(footprint.intersection(window))
            if found is not None:
                covered |= found
        if found is not None:
            seen_it += found
        if covered is not None:
            saw_there += covered
    keep = (seen_it > 0) & (seen_it >= share * saw_there)
    voted = grid.outline(keep).intersection(union)
    pieces: list[Polygon] = [
        g for g in getattr(voted, "geoms", [voted]) if isinstance(g, Polygon) and g.area > 0
    ]
    if not pieces:
        return Polygon()
    return pieces[0] if len(pieces) == 1 else MultiPolygon(pieces)
