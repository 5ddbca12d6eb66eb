"""The Dask executor and the Zarr store, against the serial executor (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from bragg_dask.executors.dask import run_dask
from bragg_dask.nanobragg_args import parse_nanobragg_args
from bragg_dask.plan import plan_tiles

from .conftest import case_by_id, rel_err, simulate_case


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


@pytest.mark.parametrize("tile", [7, 16, 64])
def test_dask_store_equals_serial_and_golden(client, tmp_path, tile):
    case = case_by_id("mosaic_phi_carryover_spec")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    _, serial = simulate_case(case, tile=tile)
    store = str(tmp_path / "run.zarr")
    res = run_dask(sim, store=store, tile=tile, client=client, progress=False)
    assert np.array_equal(res.image, serial.image)
    assert rel_err(res.image, case.reference()) <= 1e-5
    g = zarr.open_group(store, mode="r")
    arr = g["float"]
    assert arr.shape == (1, 64, 64)
    assert arr.chunks == (1, min(tile, 64), min(tile, 64))
    assert arr.metadata.dimension_names == ("frame", "slow", "fast")
    assert np.asarray(g["tiles_done"][...]).all()
    meta = g.attrs["bragg_dask"]
    assert meta["fingerprint"] == sim.fingerprint()
    assert meta["config"]["crystal"]["n_cells"] == [7, 7, 7]
    assert res.stats.max_I == pytest.approx(float(serial.image.max()))


def test_dask_without_store_returns_image(client):
    case = case_by_id("nonsquare_pixel")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    res = run_dask(sim, tile=20, client=client, progress=False, dtype=torch.float64)
    assert rel_err(res.image, case.reference()) <= 1e-5


def test_store_with_other_configuration_is_refused(client, tmp_path):
    from bragg_dask.errors import ConfigError

    a = parse_nanobragg_args(case_by_id("nonsquare_pixel").args, cwd=str(case_by_id("nonsquare_pixel").path))
    b = parse_nanobragg_args(case_by_id("point_pixel").args, cwd=str(case_by_id("point_pixel").path))
    store = str(tmp_path / "s.zarr")
    run_dask(a.simulation, store=store, tile=32, client=client, progress=False)
    before = np.asarray(zarr.open_group(store, mode="r")["float"][...]).copy()
    with pytest.raises(ConfigError, match="--overwrite"):
        run_dask(b.simulation, store=store, tile=32, client=client, progress=False)
    assert np.array_equal(np.asarray(zarr.open_group(store, mode="r")["float"][...]), before)


def test_plan_matches_store_chunks():
    plan = plan_tiles(2527, 2463, 256)
    assert plan.grid == (10, 10)
