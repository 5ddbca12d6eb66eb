"""Tiled runs equal the untiled run, bit for bit in float64."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bragg_dask.plan import plan_tiles

from .conftest import case_by_id, simulate_case


@pytest.mark.parametrize("cid", ["mosaic_phi_carryover_spec", "nonsquare_pixel", "hkl_partial_defaultF_Xbeam"])
def test_serial_tile_sizes_1_7_64_identical(cid):
    case = case_by_id(cid)
    images = [simulate_case(case, tile=t)[1].image for t in (1, 7, 64)]
    assert np.array_equal(images[0], images[1])
    assert np.array_equal(images[0], images[2])


@given(s=st.integers(1, 300), f=st.integers(1, 300), t=st.integers(1, 400), u=st.integers(1, 400))
@settings(max_examples=200, deadline=None)
def test_plan_covers_detector_exactly_once(s, f, t, u):
    plan = plan_tiles(s, f, (t, u))
    cover = np.zeros((s, f), dtype=int)
    for tile in plan.tiles():
        assert tile.s1 > tile.s0 and tile.f1 > tile.f0
        cover[tile.s0 : tile.s1, tile.f0 : tile.f1] += 1
    assert (cover == 1).all()
    assert plan.tile_shape[0] <= s and plan.tile_shape[1] <= f


def test_plan_raster_order():
    tiles = plan_tiles(10, 10, 4).tiles()
    assert [t.index for t in tiles] == [(i, j) for i in range(3) for j in range(3)]


def test_tile_size_below_one_is_refused():
    from bragg_dask.errors import ConfigError

    with pytest.raises(ConfigError, match="--tile"):
        plan_tiles(10, 10, 0)
