"""Compiled (numba) loops of the matcher: classifying (detection box, site) pairs and clipping
convex detections to convex sites. Both run over many small polygons, where a per-pair call
into GEOS costs more than the arithmetic itself.

The functions here take and return plain numpy arrays; `geo.matching` decides which pairs
may take these paths and sends every other pair to GEOS. Compiled on first use and cached on
disk (numba's ``cache=True``); set ``NUMBA_CACHE_DIR`` where the package folder is read-only.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

OUTSIDE, INSIDE, AMBIGUOUS = 0, 1, 2
NOT_CONVEX = -1  # the clip result count of a pair the convex clipper refused
AREA_EPS = 1e-12  # m²: a clip smaller than this is a touch, not an overlap


def _classify(
    det_bounds: Any, det_idx: Any, site_idx: Any, edges: Any, offsets: Any, counts: Any, out: Any
) -> None:  # pragma: no cover - compiled
    for k in numba.prange(det_idx.shape[0]):
        d = det_idx[k]
        s = site_idx[k]
        min_x, min_y = det_bounds[d, 0], det_bounds[d, 1]
        max_x, max_y = det_bounds[d, 2], det_bounds[d, 3]
        px, py = 0.5 * (min_x + max_x), 0.5 * (min_y + max_y)
        touches = False
        crossings = 0
        for e in range(offsets[s], offsets[s] + counts[s]):
            x1, y1, x2, y2 = edges[e, 0], edges[e, 1], edges[e, 2], edges[e, 3]
            dx, dy = x2 - x1, y2 - y1
            if (
                max(x1, x2) >= min_x
                and min(x1, x2) <= max_x
                and max(y1, y2) >= min_y
                and min(y1, y2) <= max_y
            ):
                # The box touches the edge unless its corners lie strictly on one side.
                s1 = dx * (min_y - y1) - dy * (min_x - x1)
                s2 = dx * (min_y - y1) - dy * (max_x - x1)
                s3 = dx * (max_y - y1) - dy * (max_x - x1)
                s4 = dx * (max_y - y1) - dy * (min_x - x1)
                left = s1 > 0 and s2 > 0 and s3 > 0 and s4 > 0
                right = s1 < 0 and s2 < 0 and s3 < 0 and s4 < 0
                if not left and not right:
                    touches = True
                    break
            # Even-odd crossing test of the box centre (holes' rings count too).
            if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * dx / dy:
                crossings += 1
        if touches:
            out[k] = AMBIGUOUS
        elif crossings % 2 == 1:
            out[k] = INSIDE
        else:
            out[k] = OUTSIDE


def _convex_sign(xy: Any, start: int, count: int) -> int:  # pragma: no cover - compiled
    """+1 (counter-clockwise) or -1 (clockwise) for a convex ring of ``count`` distinct
    vertices, 0 if it is not convex or degenerate."""
    sign = 0
    for i in range(count):
        ax, ay = xy[start + i, 0], xy[start + i, 1]
        bx, by = xy[start + (i + 1) % count, 0], xy[start + (i + 1) % count, 1]
        cx, cy = xy[start + (i + 2) % count, 0], xy[start + (i + 2) % count, 1]
        turn = (bx - ax) * (cy - by) - (by - ay) * (cx - bx)
        if turn > 0:
            if sign < 0:
                return 0
            sign = 1
        elif turn < 0:
            if sign > 0:
                return 0
            sign = -1
    return sign


def _shoelace(xy: Any, start: int, count: int) -> float:  # pragma: no cover - compiled
    # Relative to the first vertex: UTM coordinates are ~1e6 m, and their products would
    # cancel away the digits of a small polygon's area.
    ox, oy = xy[start, 0], xy[start, 1]
    total = 0.0
    for i in range(count):
        j = (i + 1) % count
        ax, ay = xy[start + i, 0] - ox, xy[start + i, 1] - oy
        bx, by = xy[start + j, 0] - ox, xy[start + j, 1] - oy
        total += ax * by - bx * ay
    return 0.5 * total


def _clip(
    det_xy: Any,
    det_start: Any,
    det_count: Any,
    site_idx: Any,
    site_xy: Any,
    site_start: Any,
    site_count: Any,
    site_sign: Any,
    out_xy: Any,
    out_start: Any,
    out_count: Any,
    out_area: Any,
    det_area: Any,
) -> None:  # pragma: no cover - compiled
    """Sutherland-Hodgman: each convex detection ring clipped by its convex site ring."""
    for k in numba.prange(det_start.shape[0]):
        m = det_count[k]
        s = site_idx[k]
        sign = site_sign[s]
        det_sign = _convex_sign(det_xy, det_start[k], m)
        if sign == 0 or det_sign == 0:
            out_count[k] = NOT_CONVEX
            continue
        det_area[k] = abs(_shoelace(det_xy, det_start[k], m))
        capacity = m + site_count[s] + 1
        current = np.empty((capacity, 2))
        following = np.empty((capacity, 2))
        for i in range(m):
            current[i, 0] = det_xy[det_start[k] + i, 0]
            current[i, 1] = det_xy[det_start[k] + i, 1]
        size = m
        for e in range(site_count[s]):
            if size == 0:
                break
            ax, ay = site_xy[site_start[s] + e, 0], site_xy[site_start[s] + e, 1]
            nxt = site_start[s] + (e + 1) % site_count[s]
            bx, by = site_xy[nxt, 0], site_xy[nxt, 1]
            ex, ey = bx - ax, by - ay
            new_size = 0
            for i in range(size):
                px, py = current[i, 0], current[i, 1]
                qx, qy = current[(i + 1) % size, 0], current[(i + 1) % size, 1]
                p_side = sign * (ex * (py - ay) - ey * (px - ax))
                q_side = sign * (ex * (qy - ay) - ey * (qx - ax))
                if p_side >= 0:
                    following[new_size, 0] = px
                    following[new_size, 1] = py
                    new_size += 1
                if (p_side >= 0) != (q_side >= 0):
                    t = p_side / (p_side - q_side)
                    following[new_size, 0] = px + t * (qx - px)
                    following[new_size, 1] = py + t * (qy - py)
                    new_size += 1
            current, following = following, current
            size = new_size
        area = abs(_shoelace(current, 0, size)) if size >= 3 else 0.0
        out_area[k] = area
        out_count[k] = size if area > AREA_EPS else 0
        for i in range(out_count[k]):
            out_xy[out_start[k] + i, 0] = current[i, 0]
            out_xy[out_start[k] + i, 1] = current[i, 1]


def _ring_signs(xy: Any, start: Any, count: Any, out: Any) -> None:  # pragma: no cover
    for s in numba.prange(start.shape[0]):
        out[s] = _convex_sign(xy, start[s], count[s]) if count[s] >= 3 else 0


_jit = numba.njit(cache=True, nogil=True)
_jit_parallel = numba.njit(cache=True, nogil=True, parallel=True)
_convex_sign = _jit(_convex_sign)
_shoelace = _jit(_shoelace)
_classify_compiled = _jit_parallel(_classify)
_clip_compiled = _jit_parallel(_clip)
_ring_signs_compiled = _jit_parallel(_ring_signs)


def classify_pairs(
    det_bounds: NDArray[np.float64],
    det_idx: NDArray[np.int64],
    site_idx: NDArray[np.int64],
    edges: NDArray[np.float64],
    offsets: NDArray[np.int64],
    counts: NDArray[np.int64],
) -> NDArray[np.uint8]:
    """Per pair: the detection's box is INSIDE the site, OUTSIDE it, or the site's boundary
    touches the box (AMBIGUOUS: decide exactly)."""
    out = np.empty(len(det_idx), dtype=np.uint8)
    if len(det_idx):
        _classify_compiled(
            np.ascontiguousarray(det_bounds), det_idx, site_idx, edges, offsets, counts, out
        )
    return out


def ring_signs(
    xy: NDArray[np.float64], start: NDArray[np.int64], count: NDArray[np.int64]
) -> NDArray[np.int8]:
    """Per ring (distinct vertices ``xy[start:start+count]``): +1 convex counter-clockwise,
    -1 convex clockwise, 0 not convex."""
    out = np.zeros(len(start), dtype=np.int8)
    if len(start):
        _ring_signs_compiled(xy, start, count, out)
    return out


def clip_convex(
    det_xy: NDArray[np.float64],
    det_start: NDArray[np.int64],
    det_count: NDArray[np.int64],
    site_idx: NDArray[np.int64],
    site_xy: NDArray[np.float64],
    site_start: NDArray[np.int64],
    site_count: NDArray[np.int64],
    site_sign: NDArray[np.int8],
) -> tuple[
    NDArray[np.float64], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[Any]
]:
    """Clip each detection ring (pair k: ``det_xy[det_start[k]:+det_count[k]]``) by the ring
    of site ``site_idx[k]``. Returns the clipped vertices (pair k's at
    ``out_xy[out_start[k]:+out_count[k]]``), out_count (0: no overlap, NOT_CONVEX: refused,
    send the pair to GEOS), the clipped areas and the detections' areas."""
    n = len(det_start)
    capacity = det_count + site_count[site_idx] + 1
    out_start = np.zeros(n, dtype=np.int64)
    if n:
        out_start[1:] = np.cumsum(capacity)[:-1]
    out_xy = np.empty((int(capacity.sum()), 2))
    out_count = np.zeros(n, dtype=np.int64)
    out_area = np.zeros(n)
    det_area = np.zeros(n)
    if n:
        _clip_compiled(
            det_xy,
            det_start,
            det_count,
            site_idx,
            site_xy,
            site_start,
            site_count,
            site_sign,
            out_xy,
            out_start,
            out_count,
            out_area,
            det_area,
        )
    return out_xy, out_start, out_count, out_area, det_area


def _grid_count(
    boxes: Any, x0: float, y0: float, cell: float, nx: int, ny: int, out: Any
) -> None:  # pragma: no cover - compiled
    for i in range(boxes.shape[0]):
        ix0, iy0, ix1, iy1 = _cells(boxes, i, x0, y0, cell, nx, ny)
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                out[ix * ny + iy] += 1


def _grid_fill(
    boxes: Any, x0: float, y0: float, cell: float, nx: int, ny: int, start: Any, items: Any
) -> None:  # pragma: no cover - compiled
    cursor = start[:-1].copy()
    for i in range(boxes.shape[0]):
        ix0, iy0, ix1, iy1 = _cells(boxes, i, x0, y0, cell, nx, ny)
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                items[cursor[ix * ny + iy]] = i
                cursor[ix * ny + iy] += 1


def _cells(
    boxes: Any, i: int, x0: float, y0: float, cell: float, nx: int, ny: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    ix0 = min(max(int((boxes[i, 0] - x0) / cell), 0), nx - 1)
    iy0 = min(max(int((boxes[i, 1] - y0) / cell), 0), ny - 1)
    ix1 = min(max(int((boxes[i, 2] - x0) / cell), 0), nx - 1)
    iy1 = min(max(int((boxes[i, 3] - y0) / cell), 0), ny - 1)
    return ix0, iy0, ix1, iy1


def _grid_query(
    queries: Any,
    boxes: Any,
    x0: float,
    y0: float,
    cell: float,
    nx: int,
    ny: int,
    start: Any,
    items: Any,
    offsets: Any,
    out_query: Any,
    out_item: Any,
    count_only: bool,
) -> None:  # pragma: no cover - compiled
    """Pairs (query box, item box) whose boxes intersect (touching counts). Each pair is
    reported once: in the cell holding the lower-left corner of the boxes' intersection."""
    for q in numba.prange(queries.shape[0]):
        if not (queries[q, 0] <= queries[q, 2] and queries[q, 1] <= queries[q, 3]):
            if count_only:
                offsets[q] = 0
            continue  # an empty geometry's NaN box
        ix0, iy0, ix1, iy1 = _cells(queries, q, x0, y0, cell, nx, ny)
        found = 0
        position = 0 if count_only else offsets[q]
        for ix in range(ix0, ix1 + 1):
            for iy in range(iy0, iy1 + 1):
                c = ix * ny + iy
                for k in range(start[c], start[c + 1]):
                    i = items[k]
                    if (
                        boxes[i, 0] <= queries[q, 2]
                        and boxes[i, 2] >= queries[q, 0]
                        and boxes[i, 1] <= queries[q, 3]
                        and boxes[i, 3] >= queries[q, 1]
                    ):
                        lx = max(boxes[i, 0], queries[q, 0])
                        ly = max(boxes[i, 1], queries[q, 1])
                        home_x = min(max(int((lx - x0) / cell), 0), nx - 1)
                        home_y = min(max(int((ly - y0) / cell), 0), ny - 1)
                        if home_x == ix and home_y == iy:
                            if not count_only:
                                out_query[position + found] = q
                                out_item[position + found] = i
                            found += 1
        if count_only:
            offsets[q] = found


_cells = _jit(_cells)
_grid_count_compiled = _jit(_grid_count)
_grid_fill_compiled = _jit(_grid_fill)
_grid_query_compiled = _jit_parallel(_grid_query)


class BoxGrid:
    """A uniform grid over item boxes (min_x, min_y, max_x, max_y) for finding the items
    whose boxes intersect many query boxes: the candidate search of the matcher, where
    detections and sites are small and evenly spread. Cells are sized from the items (about
    twice their median extent), and the grid is kept to a few cells per item, so clustered
    registries get larger cells rather than a huge grid."""

    def __init__(self, boxes: NDArray[np.float64]) -> None:
        self.boxes = np.ascontiguousarray(boxes, dtype=np.float64)
        n = len(self.boxes)
        if n == 0:
            self.x0 = self.y0 = 0.0
            self.cell, self.nx, self.ny = 1.0, 1, 1
        else:
            self.x0, self.y0 = float(self.boxes[:, 0].min()), float(self.boxes[:, 1].min())
            width = float(self.boxes[:, 2].max()) - self.x0
            height = float(self.boxes[:, 3].max()) - self.y0
            extent = np.maximum(
                self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1]
            )
            cell = max(2.0 * float(np.median(extent)), 1e-9)
            max_cells = 4 * n + 1024
            while (width / cell + 1) * (height / cell + 1) > max_cells:
                cell *= 1.5
            self.cell = cell
            self.nx = int(width / cell) + 1
            self.ny = int(height / cell) + 1
        per_cell = np.zeros(self.nx * self.ny, dtype=np.int64)
        args = (self.x0, self.y0, self.cell, self.nx, self.ny)
        if n:
            _grid_count_compiled(self.boxes, *args, per_cell)
        self.start = np.zeros(self.nx * self.ny + 1, dtype=np.int64)
        np.cumsum(per_cell, out=self.start[1:])
        self.items = np.empty(int(self.start[-1]), dtype=np.int64)
        if n:
            _grid_fill_compiled(self.boxes, *args, self.start, self.items)

    def query(self, queries: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(query index, item index) of every pair of intersecting boxes, by query."""
        queries = np.ascontiguousarray(queries, dtype=np.float64)
        counts = np.zeros(len(queries), dtype=np.int64)
        empty = np.empty(0, dtype=np.int64)
        if not len(queries) or not len(self.boxes):
            return empty, empty
        args = (self.x0, self.y0, self.cell, self.nx, self.ny, self.start, self.items)
        _grid_query_compiled(queries, self.boxes, *args, counts, empty, empty, True)
        offsets = np.zeros(len(queries), dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        total = int(counts.sum())
        out_query = np.empty(total, dtype=np.int64)
        out_item = np.empty(total, dtype=np.int64)
        _grid_query_compiled(queries, self.boxes, *args, offsets, out_query, out_item, False)
        return out_query, out_item
