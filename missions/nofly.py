"""Paths that keep out of no-fly zones: shortest detours over a visibility graph (metres)."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from missions.model import PlanningError

Point2 = tuple[float, float]


class NoFlyMap:
    """No-fly polygons inflated by ``margin_m``; answers "may I fly straight from a to b?"
    and, when not, the shortest path around them through the inflated corners."""

    def __init__(self, zones: Sequence[Polygon], margin_m: float = 10.0) -> None:
        self.margin_m = margin_m
        self.zones = [z.buffer(margin_m, quad_segs=2) for z in zones if not z.is_empty]
        self.union: BaseGeometry | None = shapely.union_all(self.zones) if self.zones else None
        # Segments may touch the inflated outline (that is where detours run) but not cross it.
        self._inner = self.union.buffer(-0.05) if self.union is not None else None
        if self._inner is not None:
            shapely.prepare(self._inner)
        self._corners: list[Point2] = []
        for zone in getattr(self.union, "geoms", [self.union]) if self.union is not None else []:
            if isinstance(zone, Polygon):
                self._corners.extend((float(x), float(y)) for x, y in zone.exterior.coords[:-1])
        self._corner_links: dict[int, list[tuple[int, float]]] | None = None
        self._visible: dict[Point2, list[tuple[int, float]]] = {}

    def contains(self, point: Point2) -> bool:
        return self.union is not None and self.union.contains(Point(point))

    def clear(self, a: Point2, b: Point2) -> bool:
        """True if the straight segment a-b stays out of every (inflated) zone."""
        if self._inner is None:
            return True
        if a == b:
            return not self._inner.contains(Point(a))
        return not self._inner.intersects(LineString([a, b]))

    def path(self, a: Point2, b: Point2) -> list[Point2]:
        """Shortest path from a to b avoiding the zones (a and b included)."""
        if self.clear(a, b):
            return [a, b]
        for point in (a, b):
            if self.contains(point):
                raise PlanningError(f"point {point} lies inside a no-fly zone (with margin)")
        links = self._links()
        n = len(self._corners)
        start, goal = n, n + 1
        nodes = [*self._corners, a, b]
        extra: dict[int, list[tuple[int, float]]] = {
            start: self._visible_corners(a),
            goal: self._visible_corners(b),
        }
        best = {start: 0.0}
        previous: dict[int, int] = {}
        queue = [(0.0, start)]
        while queue:
            cost, node = heapq.heappop(queue)
            if node == goal:
                break
            if cost > best.get(node, math.inf):
                continue
            neighbours = list(links.get(node, [])) if node < n else list(extra[node])
            if node < n and any(i == node for i, _ in extra[goal]):
                neighbours.append((goal, math.dist(nodes[node], b)))
            for other, length in neighbours:
                new_cost = cost + length
                if new_cost < best.get(other, math.inf):
                    best[other] = new_cost
                    previous[other] = node
                    heapq.heappush(queue, (new_cost, other))
        if goal not in best:
            raise PlanningError(f"no path from {a} to {b} around the no-fly zones")
        route = [goal]
        while route[-1] != start:
            route.append(previous[route[-1]])
        return [nodes[i] for i in reversed(route)]

    def distance(self, a: Point2, b: Point2) -> float:
        points = self.path(a, b)
        return sum(math.dist(p, q) for p, q in itertools.pairwise(points))

    def distance_matrix(self, starts: Sequence[Point2], ends: Sequence[Point2]) -> np.ndarray:
        """Flying distance from every start to every end (metres), around the zones. The
        straight segments are tested all at once; only the blocked ones search a detour."""
        a = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
        b = np.asarray(ends, dtype=np.float64).reshape(-1, 2)
        straight = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        if self._inner is None or not len(a) or not len(b):
            return straight
        pairs_a = np.repeat(a, len(b), axis=0)
        pairs_b = np.tile(b, (len(a), 1))
        segments = shapely.linestrings(
            np.stack([pairs_a, pairs_b], axis=1).reshape(-1, 2),
            indices=np.repeat(np.arange(len(pairs_a)), 2),
        )
        blocked = shapely.intersects(self._inner, segments).reshape(len(a), len(b))
        result = straight.copy()
        for i, j in zip(*np.nonzero(blocked), strict=True):
            result[i, j] = self.distance(tuple(a[i]), tuple(b[j]))
        return result

    def _visible_corners(self, point: Point2) -> list[tuple[int, float]]:
        """The zone corners reachable in a straight line from ``point`` (remembered: the
        same launch points and task ends are asked about again and again)."""
        known = self._visible.get(point)
        if known is None:
            if len(self._corners):
                corners = np.asarray(self._corners)
                rays = shapely.linestrings(
                    np.stack([np.broadcast_to(point, corners.shape), corners], axis=1)
                )
                clear = ~shapely.intersects(self._inner, rays)
            else:
                clear = np.zeros(0, dtype=bool)
            known = [
                (i, math.dist(point, self._corners[i])) for i in np.flatnonzero(clear).tolist()
            ]
            self._visible[point] = known
        return known

    def _links(self) -> dict[int, list[tuple[int, float]]]:
        if self._corner_links is None:
            links: dict[int, list[tuple[int, float]]] = {i: [] for i in range(len(self._corners))}
            for i, p in enumerate(self._corners):
                for j in range(i + 1, len(self._corners)):
                    q = self._corners[j]
                    if self.clear(p, q):
                        length = math.dist(p, q)
                        links[i].append((j, length))
                        links[j].append((i, length))
            self._corner_links = links
        return self._corner_links
