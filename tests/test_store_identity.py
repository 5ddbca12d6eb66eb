"""A store resumes only the run that made it: every option that changes what a tile holds (the physics,
the precision, the parity and its emulated threads, the noise seed, the dataset and its orientation seed,
the tiling) is part of its fingerprint, so a run that differs in any one of them is refused in one line,
nothing in the store changed; the same run again resumes and computes nothing."""

from __future__ import annotations

import shutil

import pytest

from bragg_dask.cli import main

from .conftest import main_in, tree_state

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
    "32",
    "-lambda",
    "1.0",
    "-noprogress",
    "-nopgm",
    "-seed",
    "3",
    "--tile",
    "16",
    "--orientations",
    "2",
    "--orientation-seed",
    "1",
    "--zarr",
    "s.zarr",
]
NOISY = [
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
    "32",
    "-lambda",
    "1.0",
    "-noprogress",
    "-nopgm",
    "-noisefile",
    "n.img",
    "-seed",
    "3",
    "--tile",
    "16",
    "--zarr",
    "s.zarr",
]


def _swap(argv, flag, value):
    out = list(argv)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


CHANGES = {
    "dtype": (BASE, ["--dtype", "float32"]),
    "parity": (BASE, ["--parity", "c"]),
    "c-threads": (BASE + ["--parity", "c"], ["--c-threads", "2"]),
    "orientation-seed": (BASE, ("--orientation-seed", "2")),
    "orientations": (BASE, ("--orientations", "3")),
    "tile": (BASE, ("--tile", "8")),
    "physics": (BASE, ("-default_F", "101")),
    "noise-seed": (NOISY, ("-seed", "4")),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = {}
    for argv, _ in CHANGES.values():
        key = " ".join(argv)
        if key not in out:
            d = tmp_path_factory.mktemp("made")
            assert main_in(d, argv) == 0
            out[key] = d
    return out


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_run_that_differs_in_one_option_is_refused(made, tmp_path, monkeypatch, capsys, change):
    argv, extra = CHANGES[change]
    work = tmp_path / "w"
    shutil.copytree(made[" ".join(argv)], work)
    other = _swap(argv, *extra) if isinstance(extra, tuple) else argv + extra
    before = tree_state(work)
    monkeypatch.chdir(work)
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists with another configuration" in err[0] and "--overwrite" in err[0], err
    assert tree_state(work) == before
    assert main(argv) == 0  # the same run again: resumed, nothing computed
    assert "tiles computed: 0 of" in capsys.readouterr().out
