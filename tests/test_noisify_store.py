"""``bragg-dask noisify STORE``: a store's frames through noisify's detector model into its int and noise
arrays, tile by tile from halos, byte for byte the file mode on the exported float image."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bragg_dask import store as zstore

from .test_cli import assert_one_line_error
from .test_cli import run_cli as _run_cli

CLI = [sys.executable, "-m", "bragg_dask"]
# 40 fast x 48 slow pixels in 16 x 16 tiles: a 3 x 3 grid of tiles, the last column narrower
SIM = [
    "-default_F",
    "100",
    "-N",
    "5",
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-lambda",
    "1.0",
    "-phi",
    "0",
    "-osc",
    "0.5",
    "-detpixels_f",
    "40",
    "-detpixels_s",
    "48",
    "-noprogress",
    "-nopgm",
    "--workers",
    "1",
    "--tile",
    "16",
]
SHAPE = (48, 40)
# a PSF whose radius (20 pixels) is larger than a tile, readout, flicker and calibration noise
MODEL = [
    "-scale",
    "30",
    "-gain",
    "2",
    "-adc",
    "10",
    "-psf",
    "gauss",
    "-psf_fwhm",
    "500",
    "-psf_radius",
    "20",
    "-readout",
    "2",
    "-flicker",
    "0.02",
    "-seed",
    "11",
]


def run_cli(args, cwd):
    return _run_cli([str(a) for a in args], cwd)


def read_img(path):
    raw = open(path, "rb").read()
    return np.frombuffer(raw[512:], dtype="<u2")[: SHAPE[0] * SHAPE[1]].reshape(SHAPE)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A one-frame store without int/noise arrays and a 3-frame (sharded) rotation series."""
    d = tmp_path_factory.mktemp("stores")
    out = {}
    for name, extra in (("one.zarr", ["-nonoise"]), ("series.zarr", ["--frames", "3"])):
        p = run_cli(SIM + extra + ["--zarr", name], d)
        assert p.returncode == 0, p.stderr
        out[name] = d / name
    return d, out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _file_mode(folder, store, frame, model, parity):
    """The frame exported as a float file, then noisify's file mode (tiled as the store) on it."""
    p = run_cli(["export", store, "--frame", frame, "-floatfile", "f.bin"], folder)
    assert p.returncode == 0, p.stderr
    p = run_cli(
        [
            "noisify",
            "-floatfile",
            "f.bin",
            "-detpixels_x",
            SHAPE[1],
            "-detpixels_y",
            SHAPE[0],
            "-pixel",
            "0.2",
            "--tile",
            "16",
            "-nopgm",
            "--parity",
            parity,
        ]
        + model,
        folder,
    )
    assert p.returncode == 0, p.stderr
    return read_img(folder / "intimage.img"), (read_img(folder / "noiseimage.img") if "-nonoise" not in model else None)


@pytest.mark.parametrize("parity", ["spec", "c"])
def test_store_frame_equals_the_file_mode(made, parity, tmp_path):
    d, stores = made
    s = _copy(stores["one.zarr"], tmp_path / "s.zarr")
    assert zstore.NOISE not in zstore.image_arrays(str(s))  # created by noisify
    p = run_cli(["noisify", s, "--parity", parity] + MODEL, tmp_path)
    assert p.returncode == 0, p.stderr
    want_int, want_noise = _file_mode(tmp_path, s, 0, MODEL, parity)
    assert zstore.image_arrays(str(s)) >= {zstore.INT, zstore.NOISE}
    got_int = zstore.read_frame(str(s), 0, zstore.INT)
    got_noise = zstore.read_frame(str(s), 0, zstore.NOISE)
    assert got_int.dtype == np.uint16 and got_int.tobytes() == want_int.tobytes()
    assert got_noise.tobytes() == want_noise.tobytes()
    assert len(np.unique(got_noise)) > 10  # not a trivial image
    rec = zstore.store_metadata(str(s))["response"]["frames"]["0"]
    assert rec["noise_seed"] == 11 and rec["model"]["psf_radius"] == 20 and rec["model"]["pixel"] == pytest.approx(0.2)
    assert rec["model"]["parity"] == parity


@pytest.mark.parametrize("parity", ["spec", "c"])
def test_nonoise_blurs_the_int_image_as_the_file_mode(made, parity, tmp_path):
    d, stores = made
    s = _copy(stores["one.zarr"], tmp_path / "s.zarr")
    model = ["-scale", "30", "-psf", "fiber", "-psf_fwhm", "300", "-psf_radius", "18", "-nonoise"]
    p = run_cli(["noisify", s, "--parity", parity] + model, tmp_path)
    assert p.returncode == 0, p.stderr
    assert zstore.NOISE not in zstore.image_arrays(str(s))
    want_int, _ = _file_mode(tmp_path, s, 0, model, parity)
    assert zstore.read_frame(str(s), 0, zstore.INT).tobytes() == want_int.tobytes()


def test_sharded_series_all_frames_with_a_time_based_seed(made, tmp_path):
    d, stores = made
    s = _copy(stores["series.zarr"], tmp_path / "s.zarr")
    assert zstore.whole_frames(zstore.opened(str(s), "r"))
    model = [m for m in MODEL if m not in ("-seed", "11")]
    p = run_cli(["noisify", s, "--all-frames"] + model, tmp_path)
    assert p.returncode == 0, p.stderr
    seeds = [int(ln.split()[-1]) for ln in p.stdout.splitlines() if ln.startswith("noise seed ")]
    assert len(seeds) == 1
    frames = zstore.store_metadata(str(s))["response"]["frames"]
    assert [frames[str(k)]["noise_seed"] for k in range(3)] == [seeds[0] + k for k in range(3)]
    for k in (0, 2):  # frame k's seed is the seed + k
        (tmp_path / str(k)).mkdir()
        want_int, want_noise = _file_mode(tmp_path / str(k), s, k, model + ["-seed", seeds[0] + k], "spec")
        assert zstore.read_frame(str(s), k, zstore.INT).tobytes() == want_int.tobytes()
        assert zstore.read_frame(str(s), k, zstore.NOISE).tobytes() == want_noise.tobytes()


def test_one_frame_of_a_series_leaves_the_others(made, tmp_path):
    d, stores = made
    s = _copy(stores["series.zarr"], tmp_path / "s.zarr")
    before = [zstore.read_frame(str(s), k, zstore.NOISE) for k in range(3)]
    p = run_cli(["noisify", s, "--frame", "1"] + MODEL, tmp_path)
    assert p.returncode == 0, p.stderr
    after = [zstore.read_frame(str(s), k, zstore.NOISE) for k in range(3)]
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[2], after[2])
    want_int, want_noise = _file_mode(
        tmp_path, s, 1, [m for m in MODEL if m not in ("-seed", "11")] + ["-seed", "12"], "spec"
    )
    assert after[1].tobytes() == want_noise.tobytes()
    assert zstore.read_frame(str(s), 1, zstore.INT).tobytes() == want_int.tobytes()


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["-bits", "32"], ["-bits"]),
        (["--frame", "3"], ["--frame", "frame 3"]),
        (["--frame", "0", "--all-frames"], ["--all-frames"]),
        (["-floatfile", "x.bin"], ["-floatfile"]),
        (["-psf", "gauss", "--parity", "c"], ["-psf_radius"]),
    ],
)
def test_bad_requests_are_one_line_exit_2(made, extra, needles, tmp_path):
    d, stores = made
    p = run_cli(["noisify", stores["series.zarr"]] + extra, tmp_path)
    assert_one_line_error(p, *needles)


def test_an_incomplete_frame_is_refused(made, tmp_path):
    from .conftest import incomplete_copy

    d, stores = made
    s = incomplete_copy(stores["series.zarr"], tmp_path)
    p = run_cli(["noisify", s, "--frame", "1", "-seed", "1"], tmp_path)
    assert_one_line_error(p, "incomplete")
