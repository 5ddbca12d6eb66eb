"""Run settings parsed once, and one way to run: executor_for / execute behind the CLI and the API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bragg_dask
from bragg_dask.errors import ConfigError
from bragg_dask.executors import RunResult, execute, executor_for
from bragg_dask.executors.serial import SerialExecutor, run_serial
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.planning.frames import DatasetSpec
from bragg_dask.planning.plan import plan_tiles
from bragg_dask.settings import ClusterOptions, RunSettings, dtype_name, torch_dtype

ARGS = [
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
    "24",
    "-oversample",
    "1",
    "-nonoise",
    "-nopgm",
]


def _sim():
    return parse_nanobragg_args(ARGS, cwd=".").simulation


@pytest.mark.parametrize(
    "given, name",
    [(torch.float64, "float64"), (torch.float32, "float32"), ("float32", "float32"), ("float64", "float64")],
)
def test_one_dtype_conversion(given, name):
    assert dtype_name(given) == name
    assert torch_dtype(given) == (torch.float64 if name == "float64" else torch.float32)
    s = RunSettings(dtype=given)
    assert s.dtype == name and s.torch_dtype == torch_dtype(name)


@pytest.mark.parametrize(
    "fields, flag",
    [
        ({"dtype": torch.float16}, "--dtype"),
        ({"dtype": "double"}, "--dtype"),
        ({"parity": "exact"}, "--parity"),
        ({"c_threads": 0}, "--c-threads"),
        ({"tile": 0}, "--tile"),
        ({"tile": (4, -1)}, "--tile"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_settings_are_checked_when_made(fields, flag):
    with pytest.raises(ConfigError, match=flag):
        RunSettings(**fields)


def test_settings_are_frozen_and_threads_mean_something_in_c_parity_only():
    s = RunSettings(parity="spec", c_threads=4)
    assert s.threads == 1 and RunSettings(parity="c", c_threads=4).threads == 4
    with pytest.raises(AttributeError):
        s.tile = 8  # type: ignore[misc]


def test_settings_of_keywords_or_an_object_not_both():
    s = RunSettings(tile=8)
    assert RunSettings.of(s) is s
    assert RunSettings.of(tile=8, dtype=torch.float32) == RunSettings(tile=8, dtype="float32")
    with pytest.raises(TypeError, match="not both"):
        RunSettings.of(s, tile=4)
    with pytest.raises(TypeError, match="tiel"):
        RunSettings.of(tiel=4)


def test_executor_for_chooses_serial_in_process_and_dask_otherwise():
    assert isinstance(executor_for(), SerialExecutor)
    from bragg_dask.executors.dask import DaskExecutor

    assert isinstance(executor_for(store="x.zarr"), DaskExecutor)
    assert isinstance(executor_for(cluster=ClusterOptions(scheduler="tcp://127.0.0.1:1")), DaskExecutor)
    assert isinstance(executor_for(dataset=DatasetSpec("orientations", 3, 1)), DaskExecutor)
    assert isinstance(executor_for(cluster=ClusterOptions()), SerialExecutor)  # options alone: nothing remote


def test_execute_runs_the_serial_executor_with_its_plan():
    sim = _sim()
    res = execute(sim, RunSettings(tile=7))
    assert isinstance(res, RunResult)
    assert res.computed == res.total == 16  # 24 / 7 -> 4 x 4 tiles
    ref = run_serial(sim, plan_tiles(24, 24, 24)).image
    assert np.array_equal(res.image, ref)
    assert res.frame_stats == (res.stats,)


def test_the_api_takes_settings_or_their_fields():
    sim = _sim()
    a = bragg_dask.simulate(sim, settings=RunSettings(tile=5, dtype="float32"))
    b = bragg_dask.simulate(sim, tile=5, dtype=torch.float32)
    assert np.array_equal(a, b) and a.dtype == np.float32
    with pytest.raises(TypeError):
        bragg_dask.simulate(sim, tiles=5)


def test_the_store_and_in_process_paths_agree(tmp_path):
    sim = _sim()
    executor = executor_for(store=str(tmp_path / "s.zarr"))
    settings = RunSettings(tile=10)
    res = execute(sim, settings, executor)
    assert res.store is not None and res.array is None
    assert np.array_equal(res.image, execute(sim, settings).image)
    assert res.stats == execute(sim, settings).stats


def test_the_package_face_makes_a_simulation_from_the_c_programs_flags():
    sim = bragg_dask.simulation_from_args(ARGS)
    assert sim.fingerprint() == _sim().fingerprint()
    assert bragg_dask.RunSettings is RunSettings and bragg_dask.ClusterOptions is ClusterOptions


@pytest.mark.parametrize("tile", ["64", (64,), (64, 64, 64), 2.5, True, (8, 0)])
def test_a_tile_that_is_not_one_or_two_positive_integers_is_refused(tile):
    if tile == (64,):  # one edge given as a sequence: both edges
        assert RunSettings(tile=tile).tile == (64, 64)
        return
    with pytest.raises(ConfigError, match="--tile"):
        RunSettings(tile=tile)


@pytest.mark.parametrize("threads", ["3", 2.7, None, "a"])
def test_c_threads_must_be_an_integer(threads):
    with pytest.raises(ConfigError, match="--c-threads"):
        RunSettings(parity="c", c_threads=threads)


def test_integers_of_numpy_are_integers():
    s = RunSettings(tile=np.int64(16), c_threads=np.int32(2), parity="c")
    assert s.tile == 16 and type(s.tile) is int and s.c_threads == 2 and type(s.c_threads) is int


def test_run_dask_names_both_kinds_of_keywords_when_one_is_unknown():
    from bragg_dask.executors.dask import run_dask

    with pytest.raises(TypeError, match="store, client"):
        run_dask(_sim(), stor="x.zarr")


def test_a_dataset_from_python_equals_its_frames_one_by_one(tmp_path):
    sim = bragg_dask.simulation_from_args(ARGS + ["-phi", "0", "-osc", "2"])
    spec = bragg_dask.DatasetSpec("orientations", 3, orientation_seed=4)
    res = bragg_dask.simulate_dataset(sim, str(tmp_path / "d.zarr"), spec, tile=12)
    assert res.total == res.computed == 3 * 4 and len(res.frame_stats) == 3
    from bragg_dask.planning.frames import make_frames
    from bragg_dask.store import read_frame

    for f in make_frames(sim, spec):
        one = bragg_dask.simulate(f.simulation(sim), tile=12)
        assert np.array_equal(read_frame(str(tmp_path / "d.zarr"), f.index), one)
    again = bragg_dask.simulate_dataset(sim, str(tmp_path / "d.zarr"), spec, tile=12)  # resumed: nothing to do
    assert again.computed == 0
