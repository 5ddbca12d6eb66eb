"""CUDA: the kernel on a GPU equals the CPU kernel (runs only where torch sees a CUDA device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.physics.backends import REGISTRY, BackendChoice
from bragg_dask.physics.kernel import simulate_tile
from bragg_dask.planning.plan import TileSpec

from .conftest import case_by_id, rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(
    "cid",
    ["mosaic_phi_carryover_spec", "interpolate_inrange", "detector_thick_abs", "divergence_round", "oversample_polar"],
)
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


@pytest.mark.parametrize(
    "cid,dtype,tol",
    [
        ("hkl_nearest", torch.float64, 1e-12),
        ("gauss_xtal", torch.float64, 1e-12),
        ("mosaic_domains", torch.float32, 1e-5),
    ],
)
def test_cuda_fused_sum_matches_eager(cid, dtype, tol, monkeypatch):
    """The compiled (Triton) orientation sum against the eager path, both on the GPU."""

    case = case_by_id(cid)
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    tile = TileSpec(0, 64, 0, 64)
    eager = simulate_tile(sim, tile, device="cuda", dtype=dtype, backend=BackendChoice("eager")).image
    got = simulate_tile(sim, tile, device="cuda", dtype=dtype, backend=BackendChoice("auto", "on")).image
    from bragg_dask.physics.kernel import prepare

    assert REGISTRY.is_compiled(prepare(sim, "cuda", dtype, "spec").model)
    assert rel_err(got, eager) <= tol
    assert rel_err(got, case.reference()) <= (1e-5 if dtype == torch.float64 else 1e-3)


def test_cuda_tiles_equal_untiled():
    """Any tile size gives the same image on the GPU (the GPU's default tile is the whole of this one)."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.plan import default_tile, plan_tiles

    case = case_by_id("mosaic_phi_carryover_spec")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    whole = run_serial(sim, device="cuda").image
    assert default_tile("cuda") >= 64
    for tile in (7, 33):
        assert np.array_equal(run_serial(sim, plan_tiles(64, 64, tile), device="cuda").image, whole)


def test_cuda_cparity_matches_golden():
    from .conftest import simulate_case

    case = case_by_id("omp3_roi_carryover")
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.plan import plan_tiles

    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    det = sim.detector
    got = run_serial(
        sim,
        plan_tiles(det.spixels, det.fpixels, 16),
        device="cuda",
        parity="c",
        c_threads=int(case.meta["omp_threads"]),
    ).image
    _, cpu = simulate_case(case, tile=16, parity="c", c_threads=int(case.meta["omp_threads"]))
    assert rel_err(got, case.reference()) <= 1e-5
    assert rel_err(got, cpu.image) <= 1e-12


def test_cuda_noise_equals_cpu_noise(tmp_path):
    """The same seed gives the same noise image from a GPU run as from a CPU run (counter-based)."""
    import subprocess
    import sys

    from bragg_dask.io.smv import read_smv

    case = case_by_id("noise_int_scale")
    imgs = {}
    for dev in ("cpu", "cuda"):
        d = tmp_path / dev
        d.mkdir()
        for p in case.path.iterdir():
            if p.suffix in (".hkl", ".mat", ".txt") and p.name != "stdout.txt":
                (d / p.name).write_bytes(p.read_bytes())
        p = subprocess.run(
            [sys.executable, "-m", "bragg_dask", *case.args, "--device", dev],
            cwd=d,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        imgs[dev] = read_smv(str(d / "noise.img"))[1]
    assert np.array_equal(imgs["cpu"], imgs["cuda"])


def test_dask_gpu_worker_writes_store(tmp_path):
    """The Dask executor on the embedded cluster with one GPU worker: the store equals the serial run."""
    import zarr

    from bragg_dask.executors.dask import run_dask
    from bragg_dask.executors.serial import run_serial

    case = case_by_id("mosaic_phi_carryover_spec")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    store = str(tmp_path / "gpu.zarr")
    res = run_dask(sim, store=store, tile=32, device="cuda", progress=False)
    from bragg_dask.planning.plan import plan_tiles

    serial = run_serial(sim, plan_tiles(64, 64, 32), device="cuda").image
    assert np.array_equal(res.image, serial)
    assert rel_err(res.image, case.reference()) <= 1e-5
    g = zarr.open_group(store, mode="r")
    assert np.asarray(g["tiles_done"][...]).all()
    assert np.array_equal(np.asarray(g["float"][0]), serial)


@pytest.mark.parametrize("nabc", [("1", "30", "3"), ("25", "2", "1")])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_cuda_triton_kernel_every_axis_form(nabc, dtype, tol, monkeypatch):
    """Our Triton kernel: N == 1, the recurrence and the sine form, default_F, against the eager sum."""
    from bragg_dask.physics.backends import inductor as fused
    from bragg_dask.physics.kernel import prepare

    args = [
        "-cell",
        "40",
        "50",
        "60",
        "80",
        "95",
        "100",
        "-default_F",
        "7.3",
        "-misset",
        "3",
        "4",
        "5",
        "-distance",
        "50",
        "-pixel",
        "0.2",
        "-detpixels",
        "48",
        "-lambda",
        "1.0",
        "-mosaic_spread",
        "1",
        "-mosaic_domains",
        "4",
        "-Na",
        nabc[0],
        "-Nb",
        nabc[1],
        "-Nc",
        nabc[2],
    ]
    sim = parse_nanobragg_args(args, cwd=".").simulation
    tile = TileSpec(0, 48, 0, 48)
    eager = simulate_tile(sim, tile, device="cuda", dtype=dtype, backend=BackendChoice("eager")).image
    got = simulate_tile(sim, tile, device="cuda", dtype=dtype, backend=BackendChoice("triton", "on")).image
    prep = prepare(sim, "cuda", dtype, "spec")
    assert isinstance(REGISTRY.sum_for(prep, 10, BackendChoice("triton", "on")), fused.TritonSum)
    assert rel_err(got, eager) <= tol


def test_cuda_inductor_kernel_on_request(monkeypatch):
    """``--backend inductor``: Inductor's Triton code instead of ours, same image."""
    from bragg_dask.physics.backends import inductor as fused
    from bragg_dask.physics.kernel import prepare

    case = case_by_id("hkl_nearest")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    tile = TileSpec(0, 64, 0, 64)
    choice = BackendChoice("inductor", "on")
    got = simulate_tile(sim, tile, device="cuda", dtype=torch.float64, backend=choice).image
    fs = REGISTRY.sum_for(prepare(sim, "cuda", torch.float64, "spec"), 10, choice)
    assert type(fs) is fused.FusedSum and fused.spec_of(fs._model) in REGISTRY.compiled
    eager = simulate_tile(sim, tile, device="cuda", dtype=torch.float64, backend=BackendChoice("eager")).image
    assert rel_err(got, eager) <= 1e-12


@pytest.mark.parametrize("cid", ["mosaic_phi_carryover_spec", "roi_carryover_spec", "mask_carryover_spec"])
def test_cuda_tile_statistics_equal_cpu(cid):
    """Statistics the GPU computes where the values are (sum, sum of squares, count, max, argmax)."""
    case = case_by_id(cid)
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    tile = TileSpec(3, 61, 5, 50)
    gpu = simulate_tile(sim, tile, device="cuda", dtype=torch.float64)
    cpu = simulate_tile(sim, tile, device="cpu", dtype=torch.float64)
    assert gpu.computed_stats is not None
    g, c = gpu.stats(), cpu.stats()
    assert g["n"] == c["n"] and g["argmax"] == c["argmax"] and g["max"] == c["max"]
    for k in ("sum", "sumsq"):
        assert g[k] == pytest.approx(c[k], rel=1e-12)
