"""Paths that keep out of no-fly zones: shortest detours over a visibility graph (metres)."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence

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
        extra: dict[int, list[tuple[int, float]]] = {start: [], goal: []}
        for i, corner in enumerate(self._corners):
            for end, point in ((start, a), (goal, b)):
                if self.clear(point, corner):
                    extra[end].append((i, math.dist(point, corner)))
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
