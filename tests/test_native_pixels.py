"""The whole pixel in C (``native_osum.c``'s ``pix_*``, ``NativeSum.tile_image``): every rendered pixel's
points, scattering vectors, orientation sum and factors in one pass, against the eager reference path for
each feature it covers (oversampling, sensor layers, polarization, point pixels, several sources, a
background, an ROI, a pixel of more points than a block), float64 and float32; what it does not cover
stays on the torch prologue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.backends import BackendChoice, native
from bragg_dask.physics.backends.toolchain import Toolchain
from bragg_dask.physics.kernel import prepare, simulate_tile
from bragg_dask.planning.plan import plan_for

needs_cc = pytest.mark.skipif(Toolchain().compiler() is None, reason="no C compiler on this machine")
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
BASE = "-cell 70 80 90 85 95 100 -default_F 100 -lambda 1 -distance 80 -detpixels 24 -misset 10 20 30 -N 4"

CASES = {
    "plain": "",
    "oversampled": "-oversample 3 -mosaic_spread 0.5 -mosaic_domains 3",
    "sensor": "-oversample 2 -detector_thick 200 -detector_abs 400 -detector_thicksteps 3",
    "kahn": "-oversample 2 -polar 0.8",
    "nopolar": "-nopolar -oversample 1",
    "point_pixel": "-point_pixel -oversample 1",
    "sources": "-divergence 0.3 -divsteps 3 -dispersion 1 -dispsteps 3 -oversample 1",
    "water": "-water 50 -oversample 1",
    "roi": "-roi 3 17 5 20 -oversample 2",
    "many_points": "-oversample 12",  # 144 points a pixel: more than a block
    "gauss": "-gauss_xtal -oversample 1",
    "twotheta": "-twotheta 20 -oversample 1",
}


def _images(extra: str, dtype, monkeypatch):
    sim = parse_nanobragg_args((BASE + " " + extra).split(), cwd=".").simulation
    plan = plan_for(sim.detector, 16)
    calls = []
    whole = native.NativeSum.tile_image
    monkeypatch.setattr(native.NativeSum, "tile_image", lambda self, *a: calls.append(1) or whole(self, *a))
    out = {}
    for backend in ("eager", "native"):
        img = np.zeros(sim.detector.shape, np.float32)
        for t in plan.tiles():
            img[t.region] = simulate_tile(sim, t, dtype=dtype, backend=BackendChoice(backend)).image
        out[backend] = img
        assert len(calls) == (0 if backend == "eager" else len(plan.tiles()))  # (the C path, every tile)
    return sim, out


@needs_cc
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_whole_pixel_in_c_is_the_eager_pixel(case, dtype, monkeypatch):
    sim, out = _images(CASES[case], dtype, monkeypatch)
    assert native.pixels_cover(prepare(sim, "cpu", dtype, "spec"))
    ref, got = out["eager"].astype(np.float64), out["native"].astype(np.float64)
    assert np.count_nonzero(ref) > 0
    assert np.abs(got - ref).max() <= TOL[dtype] * np.abs(ref).max(), case
    assert np.array_equal(ref == 0, got == 0)  # (pixels outside the ROI: 0 both ways)


@pytest.mark.parametrize(
    "extra", ["-dmin 2", "-curved_det", "-oversample_polar -oversample 2", "-oversample_omega -oversample 1"]
)
def test_what_it_does_not_cover_stays_on_the_torch_prologue(extra):
    sim = parse_nanobragg_args((BASE + " " + extra).split(), cwd=".").simulation
    assert not native.pixels_cover(prepare(sim, "cpu", torch.float64, "spec"))
    assert not native.pixels_cover(prepare(parse_nanobragg_args(BASE.split(), cwd=".").simulation, "cpu",
                                           torch.float64, "c"))  # fmt: skip
