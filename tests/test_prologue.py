"""Per-pixel geometry computed once per tile and shared by the frames of a dataset (physics.pixels): the torch
prologue's (the eager path, a GPU, -dmin, a curved detector, the c parity; the CPU's fast path makes each pixel
whole in C and keeps nothing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics import kernel, pixels
from bragg_dask.physics.backends import BackendChoice
from bragg_dask.planning.frames import DatasetSpec, make_frames
from bragg_dask.planning.plan import plan_tiles

ARGS = (
    "-cell 40 50 60 90 90 90 -default_F 100 -N 6 -distance 50 -pixel 0.25 -detpixels 32 -oversample 2 "
    "-mosaic_spread 0.3 -mosaic_domains 2 -dispersion 0.1 -dispsteps 2 -polar 0.5 -nopgm"
).split()


EAGER = BackendChoice("eager")


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(pixels, "CACHE", pixels.PrologueCache())
    calls = []
    real = pixels.points

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(pixels, "points", counting)
    return calls


@pytest.mark.parametrize("dmin", [None, "2.5"])
def test_frames_share_the_geometry(fresh_cache, dmin):
    """The second frame on the same tile computes no geometry, and gives what a cold computation gives."""
    sim = parse_nanobragg_args(ARGS + ([] if dmin is None else ["-dmin", dmin])).simulation
    frames = make_frames(sim, DatasetSpec("orientations", 3, 4))
    tile = plan_tiles(32, 32, 32).tiles()[0]
    first = [kernel.simulate_tile(f.simulation(sim), tile, backend=EAGER).image for f in frames]
    assert len(fresh_cache) == 1  # one tile, one batch: geometry computed once for three frames
    pixels.CACHE = pixels.PrologueCache()
    for f, img in zip(frames, first):
        pixels.CACHE = pixels.PrologueCache()
        assert np.array_equal(kernel.simulate_tile(f.simulation(sim), tile, backend=EAGER).image, img)
    assert not np.array_equal(first[0], first[1])


def test_other_detector_is_not_shared(fresh_cache):
    tile = plan_tiles(32, 32, 32).tiles()[0]
    a = parse_nanobragg_args(ARGS).simulation
    b = parse_nanobragg_args(ARGS[: ARGS.index("-distance")] + ["-distance", "60"] + ARGS[ARGS.index("-pixel") :])
    kernel.simulate_tile(a, tile, backend=EAGER)
    img_b = kernel.simulate_tile(b.simulation, tile, backend=EAGER).image
    assert len(fresh_cache) == 2
    pixels.CACHE = pixels.PrologueCache()
    assert np.array_equal(kernel.simulate_tile(b.simulation, tile, backend=EAGER).image, img_b)


def test_cache_is_bounded(fresh_cache, monkeypatch):
    """Many small tiles: the cache keeps at most its entry count (and byte budget)."""
    monkeypatch.setattr(pixels, "CACHE", pixels.PrologueCache(max_entries=5))
    sim = parse_nanobragg_args(ARGS).simulation
    for tile in plan_tiles(32, 32, 4).tiles():
        kernel.simulate_tile(sim, tile, dtype=torch.float32, backend=EAGER)
    assert len(pixels.CACHE) == 5
    assert pixels.CACHE.nbytes == sum(pixels.CACHE.sizes())
