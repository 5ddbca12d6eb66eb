"""Work a run could not finish is refused before it starts (bragg_dask/planning/workload.py): its evaluations over
the budget (``--max-evaluations``, ``$BRAGG_DASK_MAX_EVALUATIONS``, 1e13 by default), or more Dask tasks
than the memory budget can hold; in one line naming the flag that drives the count and the figures,
whatever flag that is, with nothing written."""

from __future__ import annotations

import math

import pytest

from bragg_dask.cli import main
from bragg_dask.nanobragg.args import parse_nanobragg_args
from bragg_dask.planning import workload

BASE = [
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-detpixels",
    "16",
    "-lambda",
    "1.0",
    "-oversample",
    "1",
    "-noprogress",
]


@pytest.mark.parametrize(
    "extra, flag, what",
    [
        (["-phisteps", "1000", "-osc", "1"], "-phisteps", "1,000 phi steps"),
        (["-mosaic_domains", "1000", "-mosaic_spread", "0.1"], "-mosaic_domains", "1,000 mosaic domains"),
        (["-oversample", "40"], "-oversample", "1,600 sub-pixel points"),
        (["-detector_thick", "100", "-detector_thicksteps", "1000"], "-thicksteps", "1,000 detector layers"),
        (["-dispersion", "10", "-dispsteps", "1000"], "-dispsteps", "1,000 sources"),
        (["-detpixels", "1000"], "-detpixels", "1,000,000 pixels"),
        (["--frames", "1000", "-osc", "0.1", "--zarr", "s.zarr"], "--frames", "1,000 frames"),
        (["--orientations", "1000", "--zarr", "s.zarr"], "--orientations", "1,000 frames"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_the_flag_that_drives_the_count_is_named(extra, flag, what, cli_error):
    """Whatever flag makes the count, it is the one named, with every factor and the budget."""
    line = cli_error(
        BASE + extra + ["--max-evaluations", "1e5"], what, "evaluations", "budget of 1e+05", "--max-evaluations"
    )
    assert line.split(": ")[2] == flag, line


def test_the_default_budget_refuses_what_would_take_days(cli_error):
    line = cli_error(
        BASE + ["-detpixels", "4096", "-phisteps", "1000000", "-osc", "1"], "-phisteps", "1e+13", "the default", "days"
    )
    assert "16,777,216 pixels x 1 sub-pixel points x 1 detector layers x 1 sources x 1,000,000 phi steps" in line


@pytest.mark.parametrize("count", ["--frames", "--orientations"])
def test_a_dataset_at_2_31_frames_is_refused_at_once(count, cli_error):
    import time

    t0 = time.perf_counter()
    extra = ["-osc", "0.1"] if count == "--frames" else []
    cli_error(BASE + extra + [count, str(2**31 - 1), "--zarr", "s.zarr"], count, "2,147,483,647 frames", "budget")
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "0.5", "abc", "", "1e999"])
def test_a_bad_budget_is_named(value, cli_error):
    cli_error(BASE + ["--max-evaluations", value], "--max-evaluations")


def test_a_bad_budget_in_the_environment_is_named(cli_error, monkeypatch):
    monkeypatch.setenv(workload.ENV, "lots")
    cli_error(BASE, workload.ENV, "not a number")


def test_a_raised_budget_lets_the_run_go(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = BASE + ["-phisteps", "10", "-osc", "1", "-floatfile", "f.bin", "-nonoise", "-nopgm"]
    sim = parse_nanobragg_args(argv).simulation
    n = math.prod(k for _, k in workload.factors(sim))
    assert n == 16 * 16 * 10
    assert main(argv + ["--max-evaluations", str(n - 1)]) == 2 and not (tmp_path / "f.bin").exists()
    monkeypatch.setenv(workload.ENV, str(n))
    assert main(argv) == 0 and (tmp_path / "f.bin").stat().st_size == 16 * 16 * 4


def test_the_roi_counts_only_its_pixels():
    sim = parse_nanobragg_args(BASE + ["-detpixels", "100", "-roi", "0", "9", "0", "4"]).simulation
    assert dict(workload.factors(sim))["pixels"] == 50


def test_more_tasks_than_memory_can_hold_are_refused_naming_the_tile(cli_error):
    """A detector of 10^12 pixels in tiles of 256: 15 million tasks would exhaust the scheduler (the run
    lost it); refused at once, before any store is made."""
    line = cli_error(
        BASE + ["-detpixels", "1000000", "--zarr", "s.zarr", "--memory-limit", "16G"],
        "--tile",
        "15,264,649 tiles of 256 x 256 pixels",
        "Dask tasks",
        "16.0 GiB budget (--memory-limit)",
        "give a larger --tile",
    )
    assert line.split(": ")[2] == "--tile"


def test_whole_frame_tasks_count_frames(cli_error):
    """A dataset written a whole frame per task: its tasks are its frames, so the dataset's flag is named."""
    line = cli_error(
        BASE
        + [
            "-detpixels",
            "64",
            "--tile",
            "16",
            "--orientations",
            "2000000",
            "--zarr",
            "s.zarr",
            "--memory-limit",
            "4G",
            "--max-evaluations",
            "1e15",
        ],
        "2,000,000 Dask tasks",
        "give fewer frames",
    )
    assert line.split(": ")[2] == "--orientations"
