"""Tiled runs equal the untiled run, bit for bit in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bragg_dask.physics.backends import BackendChoice
from bragg_dask.physics.roi import rendered_mask
from bragg_dask.planning.plan import plan_tiles

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


# --- the tile type and the shared walk over a tile's evaluations (physics.tiles, physics.evaluation) ---------

WALK_ARGS = (
    "-cell 40 50 60 90 90 90 -misset 10 -20 30 -default_F 100 -N 5 -distance 40 -pixel 0.3 -detpixels 11 "
    "-oversample 2 -phi 0 -osc 1.5 -phisteps 3 -mosaic_spread 0.3 -mosaic_domains 2 -dispersion 0.2 "
    "-dispsteps 2 -dmin 4.5"
).split()


def _walk_sim(extra=()):
    from bragg_dask.nanobragg.args import parse_nanobragg_args

    return parse_nanobragg_args(WALK_ARGS + list(extra)).simulation


def test_tile_spec_is_the_physics_type():
    from bragg_dask.physics import tiles
    from bragg_dask.planning import plan

    assert plan.TileSpec is tiles.TileSpec
    t = plan.TileSpec(2, 5, 3, 9, (1, 2))
    assert t.shape == (3, 6) and t.n_pixels == 18 and t.name == "tile-s0001-f0002"
    assert all(type(x) is tiles.TileSpec for x in plan_tiles(9, 9, 4).tiles())


def test_walk_visits_the_rendered_pixels_in_raster_order():
    from bragg_dask.physics.evaluation import TileWalk
    from bragg_dask.physics.tiles import RowState, TileSpec, TileState

    rng = np.random.default_rng(3)
    tile = TileSpec(3, 9, 2, 7)
    rendered = rng.random(tile.shape) < 0.6
    state = TileState(tuple(RowState(fresh_col=2 + r % 5) for r in range(6)))
    walk = TileWalk(tile, rendered, "cpu", state)
    batches = list(walk.batches(4))
    ss, ff = np.nonzero(rendered)
    assert walk.n == ss.size and [b.start for b in batches] == list(range(0, ss.size, 4))
    assert all(b.key == (3, 9, 2, 7, b.start, 4) for b in batches)
    assert np.array_equal(torch.cat([b.spix for b in batches]).numpy(), ss + 3)
    assert np.array_equal(torch.cat([b.fpix for b in batches]).numpy(), ff + 2)
    fresh = torch.cat([b.states.fresh for b in batches]).numpy()
    assert np.array_equal(fresh, ff + 2 == 2 + ss % 5)
    full = np.ones(tile.shape, bool)
    on_device = [(b.fpix, b.spix) for b in TileWalk(tile, full, "cpu", on_device=True).batches(7)]
    listed = [(b.fpix, b.spix) for b in TileWalk(tile, full, "cpu").batches(7)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(on_device, listed))
    with pytest.raises(ValueError):
        TileWalk(tile, full, "cpu", state, on_device=True)


@pytest.mark.parametrize("parity", ["spec", "c"])
@pytest.mark.parametrize("extra", [[], ["-oversample_polar", "-oversample_omega"]])
def test_walk_in_any_batches_gives_the_kernel_image_bit_for_bit(parity, extra):
    """pixel_values over the shared walk: the same values whatever the batches, and simulate_tile's image."""
    from bragg_dask.physics import kernel
    from bragg_dask.physics.evaluation import TileWalk
    from bragg_dask.planning.states import compute_states

    sim = _walk_sim(extra)
    plan = plan_tiles(11, 11, (6, 11))
    tile = plan.tiles()[1]
    state = compute_states(sim, plan)[tile.index] if parity == "c" else None
    prep = kernel.prepare(sim, "cpu", torch.float64, parity)
    assert (prep.model_fresh is not None) == (parity == "c") and prep.running == bool(extra)
    rendered = rendered_mask(sim.detector, tile)
    walk = TileWalk(tile, rendered, "cpu", state)
    with torch.inference_mode():
        runs = [torch.cat([kernel.pixel_values(prep, b) for b in walk.batches(size)]) for size in (1, 7, walk.n)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    image = kernel.simulate_tile(sim, tile, state, parity=parity, backend=BackendChoice("eager")).image
    assert np.array_equal(image[walk.ss, walk.ff], runs[0].to(torch.float32).numpy())


def test_source_rows_evaluate_the_fresh_cell_on_fresh_rows_only():
    from bragg_dask.physics import kernel, pixels
    from bragg_dask.physics.evaluation import TileWalk
    from bragg_dask.physics.tiles import RowState, TileSpec, TileState

    sim = _walk_sim()
    prep = kernel.prepare(sim, "cpu", torch.float64, "c")
    tile = TileSpec(4, 7, 3, 8)
    state = TileState((RowState(fresh_col=5), RowState(), RowState()))
    walk = TileWalk(tile, np.ones(tile.shape, bool), "cpu", state)
    (batch,) = walk.batches(walk.n)
    geo = batch.geometry(prep)
    has, src0, pt0 = pixels.first_evaluation(geo.kept_all)
    q = geo.kept_all.shape[2]

    def total(model, sc, ok):
        return model.sum(sc, ok)

    n_fresh = 0
    for src in batch.sources(prep, geo.scatters, geo.kept_all):
        got = src.evaluate(prep, total)
        plain = prep.model.sum(src.scatter.to(prep.dtype))
        fresh = prep.model_fresh.sum(src.scatter[src.fresh].to(prep.dtype))  # (same rows: same chunks)
        rows = torch.zeros(got.shape[0], dtype=torch.bool)
        rows[src.fresh] = True
        assert torch.equal(got[~rows], plain[~rows]) and torch.equal(got[src.fresh], fresh)
        assert not torch.equal(plain[src.fresh], fresh) or src.fresh.numel() == 0
        if src.index == int(src0[2]) and bool(has[2]):  # pixel 2 of the batch is (row 4, column 5)
            assert src.fresh.tolist() == [2 * q + int(pt0[2])]
        n_fresh += src.fresh.numel()
    assert n_fresh == int(has[2])


@pytest.mark.parametrize(
    "extra",
    [
        "-cell 40 50 54.1 90 90 90 -oversample 2 -mosaic_spread 5 -mosaic_domains 3 "
        "-dispersion 0.2 -dispsteps 2",  # the first switch after a few points
        "-cell 40 50 54 90 90 90 -oversample 3 -mosaic_spread 8 -mosaic_domains 4 -dispersion 0.3 -dispsteps 3",
    ],
)  # ... after a few orientations
def test_first_out_of_range_evaluation_matches_a_plain_search(extra, tmp_path):
    """The pre-pass's chunked search over the walk equals a search over every evaluation's terms."""
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.physics import kernel, prepass
    from bragg_dask.physics.evaluation import TileWalk
    from bragg_dask.physics.tiles import TileSpec, TileState

    r = range(-6, 7)
    (tmp_path / "P1.hkl").write_text(
        "".join(f"{h} {k} {l} {abs(h * 7 + k * 3 - l) + 1.5}\n" for h in r for k in r for l in r)
    )
    args = ("-misset 10 20 30 -hkl P1.hkl -interpolate -N 3 -distance 30 -pixel 0.5 -detpixels 8 " + extra).split()
    sim = parse_nanobragg_args(args, cwd=str(tmp_path)).simulation
    prep = kernel.prepare(sim, "cpu", torch.float64, "c")
    tile = TileSpec(0, 8, 0, 8)
    walk = TileWalk(tile, np.ones(tile.shape, bool), "cpu", TileState.neutral(tile))
    with torch.inference_mode():
        got = torch.cat([prepass._first_oor_batch(prep, b) for b in walk.batches(5)])
        (batch,) = walk.batches(walk.n)
        geo = batch.geometry(prep)
        p, n_src, q = geo.kept_all.shape
        want = torch.full((p,), -1, dtype=torch.int64)
        for k in range(q):  # C loop order: point, source, orientation
            for s in range(n_src):
                rows = torch.arange(p) * q + k
                oor = torch.cat([t.out_of_range for t in prep.model.terms(geo.scatters[s][rows])], 1)
                oor &= geo.kept_all[:, s, k][:, None]
                first = torch.where(oor.any(1), oor.to(torch.uint8).argmax(1), -1)
                idx = (k * n_src + s) * prep.n_orient + first
                want = torch.where((want < 0) & (first >= 0), idx, want)
    assert torch.equal(got, want)
    assert len(set(got.tolist())) >= 3  # in range, out at the first evaluation, and out later
