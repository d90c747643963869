"""What makes renders look like the real reference photos: graded earthworks, overcast light,
soft transitions of texture as well as colour, a camera whose noise is in brightness."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import shapely

from sim.camera import ViewGeometry, camera_preset
from sim.kinds import GroundTruthClass, SiteKind, SurfaceKind
from sim.render import SensorEffects, _sensor_tile, render, texture_weights
from sim.shots import pose_at, view_for
from sim.world import District, generate_district


@pytest.fixture(scope="module")
def many_sites() -> District:
    return generate_district(5, n_sites=60, extent_m=8_000.0)


def test_some_unkempt_construction_sites_are_graded_earth_with_weeds(many_sites: District) -> None:
    """The real photos show a whole plot of bare earth, weeds left in patches: some sites
    are like that, the earth labelled exposed soil and the weeds background."""
    graded = []
    for site in many_sites.sites:
        if site.kind is not SiteKind.CONSTRUCTION or site.compliant:
            continue
        soil = shapely.union_all(
            [
                p.geometry
                for p in many_sites.patches
                if p.site_id == site.site_id and p.gt_class is GroundTruthClass.EXPOSED_SOIL
            ]
        )
        if soil.area >= 0.5 * site.geometry.area:
            graded.append(site.site_id)
            weeds = [
                s
                for s in many_sites.fixed_surfaces
                if s.site_id == site.site_id and s.kind is SurfaceKind.GROUND
            ]
            assert all(s.gt_class is GroundTruthClass.BACKGROUND for s in weeds)
            # Weeds are not soil: most of their area (all but where a later heap or net lies
            # over them) is outside every soil patch.
            weed_area = sum(w.geometry.area for w in weeds)
            assert sum(w.geometry.difference(soil).area for w in weeds) >= 0.5 * weed_area
    assert len(graded) >= 2, graded


def test_some_idle_construction_sites_are_overgrown_with_pale_haul_roads(
    many_sites: District,
) -> None:
    """The real photos' other look: weedy ground crossed by two or more bare dirt roads the
    trucks keep open, labelled exposed soil, the weeds around them background."""
    overgrown = []
    for site in many_sites.sites:
        if site.kind is not SiteKind.CONSTRUCTION or site.compliant:
            continue
        own = [s for s in many_sites.fixed_surfaces if s.site_id == site.site_id]
        weedy_base = any(
            s.kind is SurfaceKind.GROUND and s.geometry.covers(site.geometry.buffer(-1.0))
            for s in own
        )
        roads = [
            s
            for s in own
            if s.kind is SurfaceKind.BARE_SOIL
            and s.geometry.length >= 60.0
            and s.geometry.area / s.geometry.length <= 4.8  # a strip under ~9.6 m wide
        ]
        if weedy_base and len(roads) >= 2:
            overgrown.append(site.site_id)
            assert all(r.gt_class is GroundTruthClass.EXPOSED_SOIL for r in roads)
    assert len(overgrown) >= 2, overgrown


def _view_over_something_tall(district: District) -> ViewGeometry:
    raised = next(s for s in district.fixed_surfaces if s.height_m >= 5.0 and s.site_id)
    centre = raised.geometry.centroid
    return view_for(
        district, camera_preset("m3e", 0.2), pose_at(district, centre.x, centre.y, 100.0)
    )


def test_overcast_days_have_weak_shadows(district: District) -> None:
    sunny = replace(district, environment=replace(district.environment, overcast=0.0))
    cloudy = replace(district, environment=replace(district.environment, overcast=1.0))
    assert sunny.environment.shadow_gain == pytest.approx(0.5)
    assert cloudy.environment.shadow_gain == pytest.approx(0.9)
    view = _view_over_something_tall(sunny)
    neutral = SensorEffects.neutral()
    lit = render(sunny, view, seed=1, sensor=neutral).bgr.astype(np.float32) + 1.0
    dim = render(cloudy, view, seed=1, sensor=neutral).bgr.astype(np.float32) + 1.0
    ratio = (dim / lit).mean(axis=2)
    # Shadowed ground is much brighter under cloud (0.9 / 0.5 of lit ground), the rest alike.
    assert float(np.median(ratio)) == pytest.approx(1.0, abs=0.05)
    assert float((ratio > 1.5).mean()) > 0.005, "no shadow lifted by the cloud"


def test_sensor_noise_is_mostly_in_brightness() -> None:
    tile = _sensor_tile(3).astype(np.float32)
    luma = tile.mean(axis=2)
    chroma = tile - luma[:, :, None]
    assert float(chroma.std()) < 0.35 * float(luma.std())


def test_texture_fades_with_the_colour_where_earth_meets_grass() -> None:
    """Across a soil-to-grass edge the texture weights (ruts, clods, tone) blend over the
    same distance as the colour, while a roof beside asphalt keeps a hard edge. Before, the
    weights were a step at the polygon's edge even where the colour faded (the renders'
    soil-to-grass edges measured half as wide as the real photos')."""
    sigma_px = 6.0
    strip = np.zeros((40, 120), np.uint8)
    strip[:, :60] = int(SurfaceKind.BARE_SOIL)
    strip[:, 60:] = int(SurfaceKind.GROUND)
    fine, coarse, tone, macro = texture_weights(strip, sigma_px)
    soil, grass = fine[20, 5], fine[20, 115]
    assert not np.allclose(soil, grass)  # two materials, each pure far from the edge
    profile = coarse[20, :, 0]  # tyre tracks: strong on soil, weak on grass
    between = (profile < profile[5] - 1e-3) & (profile > profile[115] + 1e-3)
    assert 2 * sigma_px <= between.sum() <= 6 * sigma_px  # graded over about 2 sigma each side
    assert np.all(np.diff(profile[40:80]) <= 1e-6)  # monotone across the edge
    assert tone[20, 59, 0] != tone[20, 5, 0] and macro[20, 59] != macro[20, 5]

    hard = np.zeros((40, 120), np.uint8)
    hard[:, :60] = int(SurfaceKind.ROOF_RED)
    hard[:, 60:] = int(SurfaceKind.ASPHALT)
    fine_hard = texture_weights(hard, sigma_px)[0]
    assert np.array_equal(fine_hard[20, :60], np.repeat(fine_hard[20:21, 0], 60, axis=0))
    assert np.array_equal(fine_hard[20, 60:], np.repeat(fine_hard[20:21, 119], 60, axis=0))
