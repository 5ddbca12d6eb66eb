"""The Dask executor and the Zarr store, against the serial executor (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from bragg_dask import store as zstore
from bragg_dask.executors.dask import run_dask
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.planning.plan import plan_tiles

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
    assert meta["run"]["parity"] == "spec" and meta["complete"] is True
    assert meta["fingerprint"] == zstore.run_fingerprint(sim, plan_tiles(64, 64, tile), meta["run"])
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


@pytest.mark.parametrize(
    "cid, parity, threads",
    [("mask_carryover_cparity", "c", 1), ("omp4_mask_carryover", "c", 4), ("phi_carryover_spec", "spec", 1)],
)
def test_any_tile_size_gives_the_same_image(client, tmp_path, cid, parity, threads):
    case = case_by_id(cid)
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    images = []
    for tile in (16, 7, 37, 64, 1000):  # a quarter of the side, non-dividing sizes, whole, larger than it
        res = run_dask(
            sim,
            store=str(tmp_path / f"t{tile}.zarr"),
            tile=tile,
            client=client,
            progress=False,
            parity=parity,
            c_threads=threads,
        )
        images.append(res.image)
    for img in images[1:]:
        assert np.array_equal(images[0], img)
    assert rel_err(images[0], case.reference()) <= 1e-5
    assert zarr.open_group(str(tmp_path / "t1000.zarr"), mode="r")["float"].chunks == (1, 64, 64)


def _series_args():
    return [
        "-cell",
        "40",
        "50",
        "60",
        "90",
        "90",
        "90",
        "-misset",
        "5",
        "10",
        "15",
        "-default_F",
        "100",
        "-N",
        "6",
        "-distance",
        "50",
        "-pixel",
        "0.25",
        "-detpixels",
        "32",
        "-oversample",
        "1",
        "-phi",
        "0",
        "-osc",
        "1",
        "-phisteps",
        "2",
        "-nopgm",
    ]


def test_rotation_series_opens_in_xarray_with_per_frame_metadata(client, tmp_path):
    import xarray as xr

    from bragg_dask.nanobragg.args import parse_nanobragg_args as parse
    from bragg_dask.planning.frames import DatasetSpec

    parsed = parse(_series_args() + ["-seed", "11"])
    store = str(tmp_path / "series.zarr")
    res = run_dask(
        parsed.simulation,
        store=store,
        tile=16,
        client=client,
        progress=False,
        dataset=DatasetSpec("series", 4),
        outputs=parsed.outputs,
    )
    ds = xr.open_zarr(store)
    assert ds["float"].dims == ("frame", "slow", "fast") and ds.sizes["frame"] == 4
    assert np.allclose(ds["phi0_deg"].values, [0.0, 1.0, 2.0, 3.0])
    assert ds["noise_seed"].values.tolist() == [11, 12, 13, 14]
    assert ds["noise"].dtype == np.uint16 and ds["int"].dtype == np.uint16
    assert np.allclose(ds["max_I"].values, [float(ds["float"][k].max()) for k in range(4)])
    assert len(res.frame_stats) == 4
    # frame k equals a single run started at phi0 + k*osc
    one = parse(_series_args()[:-7] + ["-phi", "2", "-osc", "1", "-phisteps", "2", "-nopgm"]).simulation
    _, single = None, run_dask(one, tile=16, client=client, progress=False)
    assert np.array_equal(ds["float"][2].values, single.image)
    assert not np.array_equal(ds["float"][0].values, ds["float"][1].values)


def test_random_orientation_dataset_records_each_orientation(client, tmp_path):
    import xarray as xr

    from bragg_dask.planning.frames import DatasetSpec, random_rotations

    sim = parse_nanobragg_args(_series_args()).simulation
    store = str(tmp_path / "orient.zarr")
    run_dask(sim, store=store, tile=32, client=client, progress=False, dataset=DatasetSpec("orientations", 8, 5))
    ds = xr.open_zarr(store)
    assert ds.sizes["frame"] == 8 and ds["orientation"].dims == ("frame", "row", "col")
    u = ds["orientation"].values
    assert np.allclose(u, random_rotations(8, 5))
    assert np.allclose(np.einsum("kij,kjl->kil", u, u.transpose(0, 2, 1)), np.eye(3), atol=1e-12)
    maxima = ds["max_I"].values
    assert len(set(np.round(maxima, 3))) > 1  # different orientations, different images
    assert ds.attrs["bragg_dask"]["run"]["dataset"] == {"kind": "orientations", "n": 8, "seed": 5}


def test_resume_in_process_counts_missing_tiles(client, tmp_path):
    case = case_by_id("nonsquare_pixel")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    store = str(tmp_path / "r.zarr")
    first = run_dask(sim, store=store, tile=16, client=client, progress=False)
    g = zarr.open_group(store, mode="r+")
    g["tiles_done"][0, 1, 2] = False  # as if that tile had not been written
    g["tiles_done"][0, 2, 5] = False
    g["float"][0, 16:32, 32:48] = 0.0
    again = run_dask(sim, store=store, tile=16, client=client, progress=False)
    assert again.computed == 2 and again.total == 18
    assert np.array_equal(again.image, first.image)


def test_lazy_dask_array_view(client):
    import dask.array as da

    import bragg_dask

    case = case_by_id("omp3_roi_carryover")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    lazy = bragg_dask.to_dask_array(sim, tile=20, parity="c", c_threads=3)
    assert isinstance(lazy, da.Array) and lazy.shape == (64, 64) and lazy.chunks[0] == (20, 20, 20, 4)
    img = lazy.compute()
    assert rel_err(img, case.reference()) <= 1e-5


def test_frames_per_task():
    from bragg_dask.executors.tasks import TASK_MIN_EVALS, frames_per_task

    assert frames_per_task(1, 16, 10, 2) == 1  # one frame: one frame per task
    assert frames_per_task(100, 1, TASK_MIN_EVALS, 2) == 1  # big tiles: one frame per task
    assert frames_per_task(32, 1, 327680, 2) == 8  # small frames: grouped, still two tasks per thread
    assert frames_per_task(1000, 1, 1000, 4) == min(-(-TASK_MIN_EVALS // 1000), 125)
    assert 1 <= frames_per_task(3, 1, 1, 64) <= 3


def test_finish_per_task():
    """finish-tile tasks (int and noise images: work per pixel) carry about FINISH_MIN_PIXELS, four tasks a
    thread at least, their images within TASK_MAX_BYTES."""
    from bragg_dask.executors.tasks import FINISH_MIN_PIXELS, TASK_MAX_BYTES, finish_per_task

    assert finish_per_task(100, 256 * 256, 2) == 12  # a Pilatus of 256-pixel tiles: 12 a task, not 1
    assert finish_per_task(10_000, 256 * 256, 2) == FINISH_MIN_PIXELS // (256 * 256)
    assert finish_per_task(64, 64, 2) == 8  # small tiles: still four tasks per thread
    assert finish_per_task(3, 10, 2) == 1 and finish_per_task(1, 1 << 22, 1) == 1
    assert finish_per_task(1000, 1 << 20, 1) == 1  # (a large tile: alone)
    assert finish_per_task(10_000, 64, 1) * 64 * 4 <= TASK_MAX_BYTES


def test_tiles_per_task_and_groups():
    from types import SimpleNamespace as NS

    from bragg_dask.executors.tasks import TASK_MIN_EVALS, task_groups, tiles_per_task

    assert tiles_per_task(16, TASK_MIN_EVALS, 2) == 1  # big tiles: one per task
    assert tiles_per_task(16, 1000, 2) == 2  # small tiles: grouped, still four tasks per thread
    assert tiles_per_task(3, 10, 2) == 1
    assert tiles_per_task(1000, TASK_MIN_EVALS // 4, 1) == 4
    assert tiles_per_task(1000, 10, 1, 625 * 625) == 5  # large tiles with little work: images bounded
    from bragg_dask.executors.tasks import frames_per_task

    assert frames_per_task(1000, 1, 10, 1, 1024 * 1024) == 2
    frames = [NS(index=i) for i in range(3)]
    tiles = [NS(index=(0, j), chunk=(0, j)) for j in range(5)]  # (a tile's chunk: its index on one panel)
    items = [(f, t) for f in frames for t in tiles]
    by_tiles = task_groups(items, 1, 4)  # consecutive items, every item once, in order
    assert [len(g) for g in by_tiles] == [4, 4, 4, 3] and [x for g in by_tiles for x in g] == items
    by_frames = task_groups(items, 2, 4)  # the same tile of two consecutive frames
    key = [(f.index, t.index) for f, t in items]
    assert sorted((f.index, t.index) for g in by_frames for f, t in g) == sorted(key)
    assert all(len({t.index for _, t in g}) == 1 for g in by_frames)
    assert all([f.index for f, _ in g] in ([0, 1], [2]) for g in by_frames)


def test_one_frame_of_small_tiles_grouped_equals_serial(tmp_path):
    """On the embedded cluster small tiles of one frame share tasks; the store equals the serial run."""
    from bragg_dask.executors.serial import run_serial

    case = case_by_id("mosaic_phi_carryover_spec")
    sim = parse_nanobragg_args(case.args, cwd=str(case.path)).simulation
    store = str(tmp_path / "g.zarr")
    outputs = parse_nanobragg_args([*case.args, "-noisefile", "noise.img", "-seed", "5"], cwd=str(case.path)).outputs
    res = run_dask(sim, store=store, tile=8, progress=False, outputs=outputs)  # 64 tiles, several to a task
    done = run_serial(sim, plan_tiles(64, 64, 8))
    assert np.array_equal(res.image, done.image)
    g = zarr.open_group(store, mode="r")
    assert np.asarray(g["tiles_done"][...]).all()
    # the int and noise images (finish-tile tasks of several tiles each) are the whole frame's, as in-process
    from bragg_dask.detector.noise import noise_image
    from bragg_dask.io.smv import int_image
    from bragg_dask.nanobragg.stats import int_scale
    from bragg_dask.physics.roi import roi_mask

    roi, scale = roi_mask(sim.detector), int_scale(done.stats, 0.0)
    assert np.array_equal(g["int"][0], int_image(done.image, roi, scale, outputs.adc))
    noise, _ = noise_image(done.image, roi, seed=5, adc=outputs.adc, fpixels=64, s0=0, f0=0)
    assert np.array_equal(g["noise"][0], noise)
    from zarr.codecs import ZstdCodec  # float images at zstd level -1 (fast: they compress little at any level)

    levels = {n: [c.level for c in g[n].metadata.codecs if isinstance(c, ZstdCodec)] for n in ("float", "int", "noise")}
    assert levels == {"float": [-1], "int": [1], "noise": [1]}


def test_small_frames_grouped_per_task_equal_single_frames(client, tmp_path):
    """Frames computed several to a task (and resumed with holes) equal frames computed one by one."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.frames import DatasetSpec, make_frames

    sim = parse_nanobragg_args(_series_args()).simulation
    spec = DatasetSpec("orientations", 12, 3)
    store = str(tmp_path / "many.zarr")
    res = run_dask(sim, store=store, tile=32, client=client, progress=False, dataset=spec)
    assert res.computed == res.total
    g = zarr.open_group(store, mode="r+")
    plan = plan_tiles(sim.detector.spixels, sim.detector.fpixels, 32)
    first = np.asarray(g["float"][...])
    for f in make_frames(sim, spec):
        one = run_serial(f.simulation(sim), plan).image
        assert np.array_equal(first[f.index], one), f.index
    for k in (2, 3, 7):  # holes: frames 2, 3 and 7 of tile (0, 0) to redo, runs of consecutive frames split
        g["tiles_done"][k, 0, 0] = False
        g["float"][k, 0:32, 0:32] = 0.0
    again = run_dask(sim, store=store, tile=32, client=client, progress=False, dataset=spec)
    assert again.computed == 3
    assert np.array_equal(np.asarray(zarr.open_group(store, mode="r")["float"][...]), first)
    assert np.asarray(zarr.open_group(store, mode="r")["tiles_done"][...]).all()


def test_a_dataset_store_has_a_few_files_per_shard_and_resumes_whole_shards(tmp_path):
    """200 frames of 4 tiles: shards of 13 frames (200 / MIN_SHARDS) for each image array and one chunk per
    shard of the done flags and statistics; a shard with a tile not done is computed again whole, to the
    same bytes."""
    import os

    import zarr

    from bragg_dask.planning.frames import DatasetSpec

    args = [
        "-cell",
        "40",
        "50",
        "60",
        "90",
        "90",
        "90",
        "-default_F",
        "100",
        "-N",
        "4",
        "-distance",
        "60",
        "-pixel",
        "0.3",
        "-detpixels",
        "16",
        "-lambda",
        "1.0",
        "-nonoise",
        "-nopgm",
        "-phi",
        "0",
        "-osc",
        "1",
    ]
    sim = parse_nanobragg_args(args, cwd=".").simulation
    store = str(tmp_path / "ds.zarr")
    first = run_dask(sim, store=store, tile=8, dataset=DatasetSpec("series", 200))
    assert first.computed == 800
    g = zarr.open_group(store, mode="r")
    assert g["float"].shards == (13, 16, 16) and g["tiles_done"].chunks == (13, 2, 2)
    files = sum(len(fs) for _, _, fs in os.walk(store))
    assert files <= 3 * 16 + 40, files  # float, tiles_done, tile_stats: a file per shard each, + metadata
    every = np.asarray(g["float"][...]).copy()
    before = every[57]
    os.unlink(os.path.join(store, "float", "c", "4", "0", "0"))  # a crash between shard 4 and its flags
    done = zarr.open_group(store, mode="r+")["tiles_done"]
    done[57, 1, 0] = False
    again = run_dask(sim, store=store, tile=8, dataset=DatasetSpec("series", 200))
    assert again.computed == 13 * 4  # the whole shard (frames 52 to 64), not the one tile
    assert np.array_equal(np.asarray(zarr.open_group(store, mode="r")["float"][...]), every)
    import bragg_dask
    from bragg_dask.planning.frames import make_frames

    frame = make_frames(sim, DatasetSpec("series", 200))[57]
    assert np.array_equal(before, bragg_dask.simulate(frame.simulation(sim), tile=8))


def test_a_dataset_store_refuses_part_of_a_frame(tmp_path):
    from bragg_dask import store as zstore

    sim = parse_nanobragg_args(
        [
            "-cell",
            "40",
            "40",
            "40",
            "90",
            "90",
            "90",
            "-default_F",
            "10",
            "-N",
            "3",
            "-detpixels",
            "16",
            "-phi",
            "0",
            "-osc",
            "1",
            "-nonoise",
            "-nopgm",
        ],
        cwd=".",
    ).simulation
    plan = plan_tiles(16, 16, 8)
    session = zstore.open_store(str(tmp_path / "p.zarr"), sim, plan, n_frames=3)
    session.commit()  # a new store is in place once committed (the run has started)
    try:
        tile = plan.tiles()[0]
        stats = {"sum": 0.0, "sumsq": 0.0, "n": 0, "max": 0.0, "argmax": None}
        with pytest.raises(ValueError, match="whole shard"):
            zstore.write_tiles(session.path, [(0, tile, np.ones(tile.shape, np.float32), stats)])
    finally:
        session.close()
