"""A store's int and noise arrays and their records stay together: the detector model's frames carry its
scale (-scale x -gain), its noise seed and a description saying so; a later simulation run on the store
keeps them where it computes nothing again, and takes them back (its own images and records) where it
does."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from bragg_dask import store as zstore
from bragg_dask.cli import main

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
    "11",
    "-osc",
    "1",
    "--tile",
    "16",
    "--zarr",
    "s.zarr",
]
SERIES = BASE + ["--frames", "3"]  # a dataset: its int and noise arrays are the model's
SINGLE = BASE + ["-intfile", "i.img", "-noisefile", "n.img"]  # one frame, the simulation's int and noise too
MODEL = ["--psf", "gauss", "--psf-fwhm", "80", "--gain", "2.5"]


def _g(path="s.zarr"):
    return zarr.open_group(path, mode="r")


def _arrays(path="s.zarr"):
    g = _g(path)
    return {n: np.asarray(g[n][...]) for n in ("int", "noise", "int_scale", "noise_seed")}


@pytest.fixture
def modelled(tmp_path, monkeypatch):
    """A 3-frame series through the detector model (gain 2.5, noise seed 11 + k)."""
    monkeypatch.chdir(tmp_path)
    assert main(SERIES + MODEL) == 0
    return tmp_path


def test_the_models_frames_carry_its_records(modelled):
    a = _arrays()
    np.testing.assert_array_equal(a["int_scale"], [2.5, 2.5, 2.5])  # noisify's -scale 1 x -gain 2.5
    np.testing.assert_array_equal(a["noise_seed"], [11, 12, 13])
    g = _g()
    assert g["int"].attrs["long_name"] == zstore.MODEL_LABEL[zstore.INT]
    assert g["noise"].attrs["long_name"] == zstore.MODEL_LABEL[zstore.NOISE]
    assert sorted(zstore.store_metadata("s.zarr")["response"]["frames"]) == ["0", "1", "2"]
    assert zstore.frame_record("s.zarr", 1).int_scale == 2.5


@pytest.fixture
def single(tmp_path, monkeypatch):
    """One frame of 4 tiles through the detector model (gain 2.5, noise seed 11)."""
    monkeypatch.chdir(tmp_path)
    assert main(SINGLE + MODEL) == 0
    return tmp_path


def test_a_simulation_run_again_keeps_the_models_images_and_records(single, capsys):
    before = _arrays()
    capsys.readouterr()
    assert main(SINGLE) == 0  # the same simulation, no model: nothing to compute again
    out = capsys.readouterr().out
    assert "tiles computed: 0 of 4" in out and "the store's int image is the detector model's" in out
    after = _arrays()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    assert sorted(zstore.store_metadata("s.zarr")["response"]["frames"]) == ["0"]


def test_a_frame_computed_again_takes_back_the_simulations_images_and_records(single, tmp_path, monkeypatch):
    modelled = _arrays()
    g = zarr.open_group("s.zarr", mode="r+")
    done = np.asarray(g["tiles_done"][...])
    done[0, 1, 1] = False  # a tile lost: the run computes it again, and the frame's images with it
    g["tiles_done"][...] = done
    assert main(SINGLE) == 0
    after = _arrays()
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")
    assert main(SINGLE) == 0  # a store that never saw the model
    plain = _arrays()
    for name in after:
        np.testing.assert_array_equal(after[name], plain[name])
    assert not np.array_equal(modelled["int"], plain["int"])
    assert "response" not in zstore.store_metadata(str(tmp_path / "s.zarr")) or not zstore.store_metadata(
        str(tmp_path / "s.zarr")
    )["response"].get("frames")
    assert _g(str(tmp_path / "s.zarr"))["int"].attrs["long_name"] == zstore.LABELS[zstore.INT][1]


def test_noisify_store_writes_its_records_with_its_arrays(modelled):
    assert (
        main(
            [
                "noisify",
                "s.zarr",
                "--all-frames",
                "-psf",
                "fiber",
                "-psf_fwhm",
                "40",
                "-gain",
                "3",
                "-scale",
                "2",
                "-seed",
                "7",
            ]
        )
        == 0
    )
    a = _arrays()
    np.testing.assert_array_equal(a["int_scale"], [6.0, 6.0, 6.0])
    np.testing.assert_array_equal(a["noise_seed"], [7, 8, 9])
    assert zstore.store_metadata("s.zarr")["response"]["frames"]["2"]["model"]["gain"] == 3.0
