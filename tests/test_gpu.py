"""CUDA: the kernel on a GPU equals the CPU kernel (runs only where torch sees a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg_args import parse_nanobragg_args
from bragg_dask.physics.kernel import simulate_tile
from bragg_dask.plan import TileSpec

from .conftest import case_by_id, rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("cid", ["mosaic_phi_carryover_spec", "interpolate_inrange", "detector_thick_abs",
                                 "divergence_round", "oversample_polar"])
def test_cuda_float64_matches_cpu_and_golden(cid):
    case = case_by_id(cid)
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    tile = TileSpec(0, 64, 0, 64)
    gpu = simulate_tile(sim, tile, device="cuda", dtype=torch.float64).image
    cpu = simulate_tile(sim, tile, device="cpu", dtype=torch.float64).image
    assert rel_err(gpu, cpu) <= 1e-12
    assert rel_err(gpu, case.reference()) <= 1e-5


def test_cuda_float32_within_1e3():
    case = case_by_id("mosaic_domains")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    img = simulate_tile(sim, TileSpec(0, 64, 0, 64), device="cuda", dtype=torch.float32).image
    assert np.isfinite(img).all() and rel_err(img, case.reference()) <= 1e-3
