"""A patch seen by several frames is outlined where most of the frames that saw it agree."""

from __future__ import annotations

import pytest
import shapely
from pyproj import CRS
from shapely.affinity import translate
from shapely.geometry import box

from geo.errors import GeoError
from geo.matching import FootprintIndex, Observation, merge_observations
from geo.vote import voted_outline

UTM = CRS.from_epsg(32650)
SEEN = {frame: box(-50, -50, 50, 50) for frame in "abcd"}  # four frames over the same ground


def test_frames_shifted_each_way_vote_for_the_patch_not_for_their_union() -> None:
    patch = box(0, 0, 10, 10)
    shifts = [(0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5)]
    outlines = [
        (frame, translate(patch, dx, dy)) for frame, (dx, dy) in zip("abcd", shifts, strict=True)
    ]
    union = shapely.union_all([g for _, g in outlines])
    assert union.area == pytest.approx(120.0)
    voted = voted_outline(outlines, SEEN, 0.5)
    assert voted.area == pytest.approx(100.0, abs=2.5)  # one 0.1 m cell of slack per side
    assert voted.intersection(patch).area / voted.union(patch).area > 0.97
    assert union.contains(voted.buffer(-1e-6))  # never beyond what some frame saw


def test_a_patch_most_frames_over_it_did_not_see_is_outvoted() -> None:
    lone = box(20, 20, 25, 25)
    assert voted_outline([("a", lone)], SEEN, 0.5).is_empty
    assert voted_outline([("a", lone), ("b", lone)], SEEN, 0.5).area == pytest.approx(25.0)
    # frames whose footprints lie elsewhere have no say
    elsewhere = {"a": SEEN["a"], "b": box(200, 200, 300, 300)}
    assert voted_outline([("a", lone)], elsewhere, 0.5).area == pytest.approx(25.0)
    # a frame without a footprint counts only where it found the class
    assert voted_outline([("a", lone)], {}, 0.5).area == pytest.approx(25.0)


def test_holes_and_one_cell_wide_strips_survive_the_raster() -> None:
    ring = box(0, 0, 10, 10).difference(box(4, 4, 6, 6))
    voted = voted_outline([("a", ring), ("b", ring)], SEEN, 0.5)
    assert voted.area == pytest.approx(96.0, abs=0.5)
    assert not voted.contains(shapely.Point(5, 5))
    strip = box(0, 0, 10, 0.1)
    assert voted_outline([("a", strip), ("b", strip)], SEEN, 0.5).area == pytest.approx(
        1.0, abs=0.2
    )


def test_the_vote_share_must_be_a_share() -> None:
    with pytest.raises(GeoError, match=r"vote share must be in \(0, 1\], got 1.5"):
        voted_outline([("a", box(0, 0, 1, 1))], SEEN, 1.5)


def _seen(frame: str, polygon: shapely.Polygon, uncertainty_m: float = 0.5) -> Observation:
    return Observation(
        frame, "exposed_soil", polygon, 0.6, uncertainty_m, (0, 0, 1, 1), site_id="S1"
    )


def test_merging_with_footprints_outlines_by_vote_and_drops_outvoted_patches() -> None:
    patch = box(0, 0, 10, 10)
    observations = [
        _seen("a", translate(patch, 0.5, 0.0)),
        _seen("b", translate(patch, -0.5, 0.0)),
        _seen("c", patch),
        _seen("d", box(30, 30, 34, 34)),  # seen by one frame of the four over it
    ]
    unioned = merge_observations(observations, UTM)
    assert sorted(round(f.area_m2) for f in unioned) == [16, 110]
    voted = merge_observations(observations, UTM, SEEN, 0.5)
    # a and b each cover 95 m² of the patch and c covers it all: 2 of 4 frames (half) agree
    # on 100 m² of it; the lone 16 m² patch is outvoted
    assert len(voted) == 1 and voted[0].area_m2 == pytest.approx(100.0, abs=1.5)
    assert len(voted[0].evidence) == 3  # every frame that saw it stays evidence
    # share 0 (the default without footprints' use) is the union, as before
    assert [round(f.area_m2) for f in merge_observations(observations, UTM, SEEN, 0.0)] == [
        110,
        16,
    ]


def test_frames_that_disagree_on_where_things_are_do_not_vote() -> None:
    """Single-point positions put each frame metres off: a 1 m track seen by four frames 2 m
    apart would get no point of agreement, so such patches keep the union."""
    track = box(0, 0, 20, 1)
    shifted = [_seen(f, translate(track, 0, 2.0 * i), 10.0) for i, f in enumerate("abcd")]
    assert merge_observations(shifted, UTM, SEEN, 0.34, vote_max_uncertainty_m=5.0) != []
    assert merge_observations(shifted, UTM, SEEN, 0.34) == []  # no gate: outvoted
    kept = merge_observations(shifted, UTM, SEEN, 0.34, vote_max_uncertainty_m=5.0)
    assert kept[0].area_m2 == pytest.approx(80.0)  # the union


def test_frames_that_saw_a_patch_and_found_nothing_lower_its_confidence() -> None:
    """A mistake only some views of the ground make (the model's guess at a frame's dark
    edge) is no surer than the share of the frames over it that made it."""
    patch = box(0, 0, 10, 10)
    everyone = [_seen(frame, patch) for frame in "abcd"]
    assert merge_observations(everyone, UTM, SEEN, 0.25)[0].confidence == pytest.approx(0.6)
    one_of_four = [_seen("a", patch)]
    lone = merge_observations(one_of_four, UTM, SEEN, 0.25)
    assert lone[0].confidence == pytest.approx(0.15)  # 0.6 from a, 0 from b, c and d
    # a frame whose footprint holds under half of the patch did not see it
    partly = {**SEEN, "b": box(-50, -50, 4, 50), "c": box(200, 200, 300, 300)}
    assert merge_observations(one_of_four, UTM, partly, 0.25)[0].confidence == pytest.approx(0.3)
    # without a vote (no footprints, or frames metres apart) it is the finders' mean
    assert merge_observations(one_of_four, UTM)[0].confidence == pytest.approx(0.6)
    far_apart = [_seen("a", patch, uncertainty_m=10.0)]
    assert merge_observations(far_apart, UTM, SEEN, 0.25, vote_max_uncertainty_m=5.0)[
        0
    ].confidence == pytest.approx(0.6)


def test_the_footprint_index_counts_footprints_over_half_the_outline() -> None:
    index = FootprintIndex({"a": box(0, 0, 10, 10), "b": box(5, 0, 20, 10), "c": box(8, 0, 20, 10)})
    assert index.saw(box(0, 0, 10, 10)) == {"a", "b"}
    assert index.saw(box(0, 0, 10, 10), share=0.1) == {"a", "b", "c"}
    assert index.saw(box(50, 50, 51, 51)) == set()
    assert FootprintIndex({}).saw(box(0, 0, 10, 10)) == set()
