"""The detector model as service flags of a simulation run (``--psf``, ``--readout``, ...): applied to the
``--zarr`` store's frames after the run, byte for byte ``bragg-dask noisify STORE --all-frames ...``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io

import pytest

from bragg_dask import store as zstore
from bragg_dask.cli import main, service_parser
from bragg_dask.detector.flags import MODEL_FLAGS, model_from_service
from bragg_dask.detector.model import DetectorModel
from bragg_dask.nanobragg.params import OutputOptions

from .test_cli import assert_one_line_error
from .test_cli import run_cli as _run_cli

# 32 fast x 24 slow pixels in 16 x 16 tiles
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
    "32",
    "-detpixels_s",
    "24",
    "-noprogress",
    "-nopgm",
    "--workers",
    "1",
    "--tile",
    "16",
]

CASES = {
    # one frame: a PSF, readout noise, the run's -seed
    "psf": (
        ["-seed", "5"],
        ["--psf", "gauss", "--psf-fwhm", "400", "--psf-radius", "6", "--readout", "2"],
        ["-psf", "gauss", "-psf_fwhm", "400", "-psf_radius", "6", "-readout", "2", "-adc", "40", "-seed", "5"],
    ),
    # a rotation series of two frames (a sharded store), nanoBragg's -scale, -adc and -seed passed on
    "series": (
        ["--frames", "2", "-scale", "30", "-adc", "10", "-seed", "7"],
        [
            "--psf",
            "fiber",
            "--psf-fwhm",
            "300",
            "--psf-radius",
            "5",
            "--gain",
            "2",
            "--flicker",
            "0.02",
            "--calibration",
            "0.05",
        ],
        [
            "-psf",
            "fiber",
            "-psf_fwhm",
            "300",
            "-psf_radius",
            "5",
            "-gain",
            "2",
            "-flicker",
            "0.02",
            "-calibration",
            "0.05",
            "-scale",
            "30",
            "-adc",
            "10",
            "-seed",
            "7",
        ],
    ),
    # -nonoise: the PSF on the noiseless int image, no noise array
    "nonoise": (
        ["-nonoise"],
        ["--psf", "gauss", "--psf-fwhm", "250", "--psf-radius", "4"],
        ["-psf", "gauss", "-psf_fwhm", "250", "-psf_radius", "4", "-adc", "40", "-nonoise"],
    ),
}


def run_cli(args, cwd):
    return _run_cli([str(a) for a in args], cwd)


def _arrays(path, names):
    n = zstore.frame_record(str(path), 0).n_frames
    return {(name, k): zstore.read_frame(str(path), k, name).tobytes() for name in names for k in range(n)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_as_noisify_on_the_store(case, tmp_path):
    sim, flags, noisify_flags = CASES[case]
    a = run_cli(SIM + sim + flags + ["--zarr", "a.zarr"], tmp_path)
    assert a.returncode == 0, a.stderr
    assert "wrote a.zarr (" in a.stdout
    b = run_cli(SIM + sim + ["--zarr", "b.zarr"], tmp_path)
    assert b.returncode == 0, b.stderr
    n = run_cli(["noisify", "b.zarr", "--all-frames"] + noisify_flags, tmp_path)
    assert n.returncode == 0, n.stderr
    names = [zstore.INT] if "-nonoise" in noisify_flags else [zstore.INT, zstore.NOISE]
    got, want = _arrays(tmp_path / "a.zarr", names), _arrays(tmp_path / "b.zarr", names)
    assert got.keys() == want.keys() and got == want
    if "-nonoise" in noisify_flags:
        assert zstore.NOISE not in zstore.image_arrays(str(tmp_path / "a.zarr"))
    response = zstore.store_metadata(str(tmp_path / "a.zarr"))["response"]
    assert response == zstore.store_metadata(str(tmp_path / "b.zarr"))["response"]
    assert sorted(response["frames"]) == [str(k) for k in range(len(got) // len(names))]


def _main(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    return status, err.getvalue()


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--psf", "gauss"),
        ("--psf-fwhm", "40"),
        ("--psf-radius", "3"),
        ("--readout", "2"),
        ("--flicker", "0.1"),
        ("--calibration", "0.05"),
        ("--gain", "2"),
    ],
)
def test_needs_a_store(flag, value):
    status, err = _main(SIM + [flag, value])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"bragg-dask: error: {flag}: needs --zarr"), lines[0]
    assert "detector model is applied to the store's frames" in lines[0]


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["--psf", "airy"], ("--psf", "gauss", "fiber")),
        (["--psf-fwhm", "-2"], ("--psf-fwhm", ">= 0")),
        (["--readout", "x"], ("--readout",)),
        (["--psf", "gauss", "--parity", "c"], ("--psf-radius", "explicit radius")),
    ],
)
def test_bad_values_before_the_run(argv, needles, tmp_path):
    p = run_cli(SIM + argv + ["--zarr", "x.zarr"], tmp_path)
    assert_one_line_error(p, *needles)
    assert not (tmp_path / "x.zarr").exists()


def test_the_service_flags_make_the_model():
    """The simulation's --psf ... options, and its own -scale, -adc, -nonoise and --parity, make the same
    model noisify's flags make (the other fields at noisify's defaults)."""
    opts = argparse.Namespace(
        psf="gauss",
        psf_fwhm=400.0,
        psf_radius=None,
        readout=2.5,
        flicker=None,
        calibration=0.0,
        gain=None,
        parity="spec",
    )
    assert model_from_service(opts) == DetectorModel(psf="gauss", psf_fwhm=400.0, readout=2.5, calibration=0.0)
    out = OutputOptions(noisefile=None, intfile_scale=0.0, adc=12.0, seed=None)
    assert model_from_service(opts, out) == DetectorModel(
        psf="gauss", psf_fwhm=400.0, readout=2.5, calibration=0.0, adc=12.0, noise=False
    )
    opts.parity = "c"
    opts.psf_radius = 6.0
    out = OutputOptions(noisefile="n.img", intfile_scale=3.0, adc=40.0, seed=9)
    model = model_from_service(opts, out)
    assert (model.scale, model.adc, model.noise, model.parity, model.psf_radius) == (3.0, 40.0, True, "c", 6.0)
    assert model_from_service(argparse.Namespace(psf=None, parity="spec")) is None


def test_model_errors_name_the_field_and_the_flag():
    from bragg_dask.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        DetectorModel(gain=-1.0, flags=(("gain", "--gain"),))
    assert (err.value.field, err.value.flag) == ("gain", "--gain")
    with pytest.raises(ConfigError) as err:
        DetectorModel(psf="gauss", parity="c")
    assert (err.value.field, err.value.flag) == ("psf_radius", "-psf_radius")
    with pytest.raises(ConfigError) as err:
        DetectorModel(bits=8)
    assert err.value.field == "bits"
    with pytest.raises(dataclasses.FrozenInstanceError):
        DetectorModel().gain = 2.0  # type: ignore[misc]


def _entries(text: str) -> dict[str, str]:
    """The help's entries, each with its continuation lines: first word -> whole text."""
    entries, last = {}, None
    for ln in text.splitlines():
        if ln.startswith("  ") and not ln.startswith("   ") and ln.split():
            last = ln.split()[0].rstrip(",")
            entries[last] = ln
        elif last is not None and ln.startswith("   "):
            entries[last] += " " + ln.strip()
        else:
            last = None
    return entries


def test_help_lists_them_with_units():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["--help"]) == 0
    text = buf.getvalue()
    units = {
        "--psf": "gauss",
        "--psf-fwhm": "um",
        "--psf-radius": "pixels",
        "--readout": "ADU",
        "--flicker": "fraction",
        "--calibration": "fraction",
        "--gain": "ADU per photon",
    }
    for _, flag, _ in MODEL_FLAGS:
        line = _entries(text)[flag]
        assert units[flag] in line and "default" in line, line
    assert {a.dest for a in service_parser()._actions} >= {attr for attr, _, _ in MODEL_FLAGS}


def test_the_pass_runs_on_the_cluster_a_task_per_frame(tmp_path):
    """Given to the Dask executor, the model runs as one task per frame on the cluster's workers, once
    the store is complete: the same arrays as ``noisify STORE --all-frames`` on the plain run's store."""
    import shutil

    from distributed import Client, LocalCluster, get_task_stream

    from bragg_dask import simulation_from_args
    from bragg_dask.cli.noisify import noisify_store_main, store_model
    from bragg_dask.executors import execute
    from bragg_dask.executors.dask import DaskExecutor
    from bragg_dask.planning.frames import DatasetSpec
    from bragg_dask.settings import RunSettings

    sim = simulation_from_args(SIM[: SIM.index("-noprogress")])
    flags = ["-psf", "gauss", "-psf_fwhm", "300", "-psf_radius", "5", "-readout", "2", "-seed", "3"]
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        plain = DaskExecutor(store=str(tmp_path / "plain.zarr"), client=client, dataset=DatasetSpec("series", 3))
        execute(sim, RunSettings(tile=16), plain)
        shutil.copytree(tmp_path / "plain.zarr", tmp_path / "want.zarr")
        noisify_store_main(str(tmp_path / "want.zarr"), ["--all-frames"] + flags)
        model = store_model(str(tmp_path / "plain.zarr"), flags)
        ex = DaskExecutor(
            store=str(tmp_path / "model.zarr"), client=client, dataset=DatasetSpec("series", 3), detector=model
        )
        with get_task_stream(client) as stream:
            execute(sim, RunSettings(tile=16), ex)
    keys = [t["key"] for t in stream.data]
    assert sorted(int(str(k).rsplit("-", 1)[1]) for k in keys if str(k).startswith("detector-frame-")) == [0, 1, 2]
    for k in range(3):
        for name in (zstore.INT, zstore.NOISE):
            got = zstore.read_frame(str(tmp_path / "model.zarr"), k, name)
            assert got.tobytes() == zstore.read_frame(str(tmp_path / "want.zarr"), k, name).tobytes()
    rec = zstore.store_metadata(str(tmp_path / "model.zarr"))["response"]["frames"]
    assert [rec[str(k)]["noise_seed"] for k in range(3)] == [3, 4, 5]
