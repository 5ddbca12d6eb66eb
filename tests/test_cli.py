"""The command line: C-compatible outputs, bad input -> one line, exit 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from .conftest import case_by_id, rel_err

CLI = [sys.executable, "-m", "bragg_dask"]
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
    "-nonoise",
    "-nopgm",
    "-noprogress",
]


def run_cli(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(CLI + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(p, *needles):
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert lines[0].startswith("bragg-dask: error:")
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("cid", ["cubic_defaultF_N5", "mosflm_mat_lambda", "int_autoscale_pgm"])
def test_cli_writes_the_c_programs_files(cid, tmp_path):
    case = case_by_id(cid)
    for name in os.listdir(case.path):
        if name not in ("float.bin", "int.img", "noise.img", "image.pgm", "stdout.txt", "case.json"):
            shutil.copy(case.path / name, tmp_path / name)
    p = run_cli(case.args, tmp_path)
    assert p.returncode == 0, p.stderr
    got = np.fromfile(tmp_path / "float.bin", dtype="<f4").reshape(case.shape)
    assert rel_err(got, case.reference()) <= 1e-5
    for out in case.meta.get("outputs", {}).values():
        assert (tmp_path / out).exists()
    if "pgm" in case.meta.get("outputs", {}):
        ref = (case.path / "image.pgm").read_bytes()
        mine = (tmp_path / "image.pgm").read_bytes()
        assert mine[:2] == b"P5" and len(mine) == len(ref)
        header_len = len(ref) - case.shape[0] * case.shape[1]
        a = np.frombuffer(ref[header_len:], np.uint8).astype(int)
        b = np.frombuffer(mine[len(mine) - a.size :], np.uint8).astype(int)
        assert np.abs(a - b).max() <= 1


def test_unknown_flag(tmp_path):
    assert_one_line_error(run_cli(BASE + ["-frobnicate", "3"], tmp_path), "-frobnicate", "unknown flag")


def test_stray_argument(tmp_path):
    assert_one_line_error(run_cli(BASE + ["stray"], tmp_path), "stray")


def test_negative_pixel_count(tmp_path):
    args = [a if a != "16" else "-16" for a in BASE]
    assert_one_line_error(run_cli(args, tmp_path), "-detpixels", ">= 1")


def test_non_numeric_value(tmp_path):
    args = BASE + ["-distance", "far"]
    assert_one_line_error(run_cli(args, tmp_path), "-distance", "'far'")


def test_missing_hkl_file(tmp_path):
    args = [a for a in BASE if a not in ("-default_F", "100")] + ["-hkl", "nothere.hkl"]
    assert_one_line_error(run_cli(args, tmp_path), "nothere.hkl", "not found")


def test_malformed_hkl_line_names_file_and_line(tmp_path):
    (tmp_path / "bad.hkl").write_text("0 0 1 10.0\n1 0 0 12.5\n1 1 x 3.0\n2 0 0 4.0\n")
    args = [a for a in BASE if a not in ("-default_F", "100")] + ["-hkl", "bad.hkl"]
    assert_one_line_error(run_cli(args, tmp_path), "bad.hkl:3", "'x'")


def test_hkl_line_with_wrong_column_count(tmp_path):
    (tmp_path / "bad.hkl").write_text("0 0 1 10.0\n1 0 0 12.5 7\n")
    args = [a for a in BASE if a not in ("-default_F", "100")] + ["-hkl", "bad.hkl"]
    assert_one_line_error(run_cli(args, tmp_path), "bad.hkl:2", "4 columns")


def test_missing_matrix_file(tmp_path):
    args = ["-mat", "none.mat"] + [a for a in BASE]
    assert_one_line_error(run_cli(args, tmp_path), "none.mat")


def test_no_structure_factors_is_an_error_not_a_stale_cache(tmp_path):
    (tmp_path / "Fdump.bin").write_bytes(b"stale")
    args = [a for a in BASE if a not in ("-default_F", "100")]
    assert_one_line_error(run_cli(args, tmp_path), "-hkl")


def test_flag_missing_value(tmp_path):
    assert_one_line_error(run_cli(BASE + ["-distance"], tmp_path), "-distance")


def test_bad_service_flags(tmp_path):
    assert_one_line_error(run_cli(BASE + ["--tile", "0"], tmp_path), "--tile")
    assert_one_line_error(run_cli(BASE + ["--dtype", "float16"], tmp_path), "--dtype")
    assert_one_line_error(run_cli(BASE + ["--bogus"], tmp_path), "--bogus")


def test_failed_run_leaves_no_output(tmp_path):
    p = run_cli(BASE + ["-floatfile", "out.bin", "-frobnicate"], tmp_path)
    assert p.returncode == 2
    assert not (tmp_path / "out.bin").exists()
    assert not any(n.startswith(".partial-") for n in os.listdir(tmp_path))


def test_float32_and_tile_flags(tmp_path):
    p64 = run_cli(BASE + ["-floatfile", "a.bin", "--tile", "5"], tmp_path)
    p32 = run_cli(BASE + ["-floatfile", "b.bin", "--dtype", "float32"], tmp_path)
    assert p64.returncode == 0 and p32.returncode == 0, p64.stderr + p32.stderr
    a = np.fromfile(tmp_path / "a.bin", "<f4")
    b = np.fromfile(tmp_path / "b.bin", "<f4")
    assert a.size == 256 and rel_err(b, a) <= 1e-3


def test_c_threads_needs_c_parity_and_a_positive_count(tmp_path):
    assert_one_line_error(run_cli(BASE + ["--c-threads", "4"], tmp_path), "--c-threads", "--parity c")
    assert_one_line_error(run_cli(BASE + ["--parity", "c", "--c-threads", "0"], tmp_path), "--c-threads")
    assert_one_line_error(run_cli(BASE + ["--parity", "x"], tmp_path), "--parity")


def test_interpolation_with_several_c_threads_is_refused(tmp_path):
    args = BASE + ["-interpolate", "--parity", "c", "--c-threads", "2"]
    (tmp_path / "t.hkl").write_text(
        "".join(f"{h} {k} {l} 10\n" for h in range(-3, 4) for k in range(-3, 4) for l in range(-3, 4))
    )
    args = [a for a in args if a not in ("-default_F", "100")] + ["-hkl", "t.hkl"]
    assert_one_line_error(run_cli(args, tmp_path), "--c-threads", "nondeterministic")


def test_zarr_run_through_local_cluster(tmp_path):
    p = run_cli(BASE + ["-floatfile", "f.bin", "--zarr", "run.zarr", "--tile", "5", "--workers", "2"], tmp_path)
    assert p.returncode == 0, p.stderr
    import zarr

    g = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    ref = np.fromfile(tmp_path / "f.bin", "<f4").reshape(16, 16)
    assert np.array_equal(np.asarray(g["float"][0]), ref)
    assert "store:" in p.stdout


def _write_mask(path, f, s, header_keys=None):
    from bragg_dask.io.smv import smv_header  # noqa: F401 - the format reference

    keys = (
        header_keys
        if header_keys is not None
        else {
            "HEADER_BYTES": "512",
            "DIM": "2",
            "BYTE_ORDER": "little_endian",
            "TYPE": "unsigned_short",
            "SIZE1": str(f),
            "SIZE2": str(s),
            "PIXEL_SIZE": "0.2",
        }
    )
    text = "{\n" + "".join(f"{k}={v};\n" for k, v in keys.items()) + "}\f"
    data = np.ones((s, f), "<u2")
    data[0, :3] = 0
    path.write_bytes(text.encode().ljust(512, b" ") + data.tobytes())


def test_mask_of_wrong_size(tmp_path):
    _write_mask(tmp_path / "m.img", 8, 8)
    assert_one_line_error(run_cli(BASE + ["-mask", "m.img"], tmp_path), "-mask", "m.img", "8x8")


def test_mask_header_missing_a_key(tmp_path):
    keys = {"HEADER_BYTES": "512", "DIM": "2", "BYTE_ORDER": "little_endian", "SIZE1": "16"}
    _write_mask(tmp_path / "m.img", 16, 16, keys)
    assert_one_line_error(run_cli(BASE + ["-mask", "m.img"], tmp_path), "m.img", "SIZE2")


def test_not_an_smv_file(tmp_path):
    (tmp_path / "m.img").write_bytes(b"P5\n16 16\n255\n" + bytes(256))
    assert_one_line_error(run_cli(BASE + ["-img", "m.img"], tmp_path), "m.img", "SMV")


def test_mask_skips_pixels(tmp_path):
    _write_mask(tmp_path / "m.img", 16, 16)
    p = run_cli(BASE + ["-mask", "m.img", "-floatfile", "f.bin", "-intfile", "i.img"], tmp_path)
    assert p.returncode == 0, p.stderr
    img = np.fromfile(tmp_path / "f.bin", "<f4").reshape(16, 16)
    assert (img[0, :3] == 0).all() and (img[1:] > 0).all()
    from bragg_dask.io.smv import read_smv

    _, ints = read_smv(str(tmp_path / "i.img"))
    assert (ints[0, :3] == 40).all()  # masked pixels inside the ROI hold the ADC offset


def test_img_header_sets_the_geometry(tmp_path):
    # a header written by the program itself, read back through -img: same simulation
    p = run_cli(BASE + ["-intfile", "ref.img", "-floatfile", "a.bin", "-Xbeam", "1.3", "-Ybeam", "1.9"], tmp_path)
    assert p.returncode == 0, p.stderr
    drop = {BASE.index(k) + d for k in ("-distance", "-pixel", "-detpixels") for d in (0, 1)}
    args = [a for i, a in enumerate(BASE) if i not in drop]
    q = run_cli(args + ["-img", "ref.img", "-floatfile", "b.bin"], tmp_path)
    assert q.returncode == 0, q.stderr
    a = np.fromfile(tmp_path / "a.bin", "<f4")
    b = np.fromfile(tmp_path / "b.bin", "<f4")
    assert a.size == b.size and rel_err(b, a) <= 1e-5


def test_stol_file_with_one_column(tmp_path):
    (tmp_path / "w.stol").write_text("0.0 2.57\n0.1 2.3\n0.2\n")
    assert_one_line_error(run_cli(BASE + ["-stol", "w.stol"], tmp_path), "w.stol:3", "2 columns")


def test_source_file_with_text_in_a_number_column(tmp_path):
    (tmp_path / "s.txt").write_text("-10 0 0 1 1e-10\n-10 0.01 zero 1 1e-10\n")
    assert_one_line_error(run_cli(BASE + ["-sourcefile", "s.txt"], tmp_path), "s.txt:2", "'zero'")


def test_source_file_zero_filled_wavelength_is_refused(tmp_path):
    (tmp_path / "s.txt").write_bytes(b"-10 0 0 1 1e-10\r\n-10 0.01 0\r\n")
    assert_one_line_error(run_cli(BASE + ["-sourcefile", "s.txt"], tmp_path), "s.txt:2", "wavelength")


def test_noise_file_written_with_seed(tmp_path):
    p = run_cli(BASE[:-3] + ["-noisefile", "n.img", "-seed", "5", "-nopgm"], tmp_path)
    q = run_cli(BASE[:-3] + ["-noisefile", "m.img", "-seed", "5", "-nopgm", "--tile", "3"], tmp_path)
    assert p.returncode == 0 and q.returncode == 0, p.stderr + q.stderr
    assert (tmp_path / "n.img").read_bytes() == (tmp_path / "m.img").read_bytes()


def test_store_with_another_configuration_is_not_overwritten(tmp_path):
    a = run_cli(BASE + ["--zarr", "s.zarr", "--workers", "1"], tmp_path)
    assert a.returncode == 0, a.stderr
    before = sorted(p.name for p in (tmp_path / "s.zarr").rglob("*"))
    b = run_cli(BASE + ["-distance", "70", "--zarr", "s.zarr", "--workers", "1"], tmp_path)  # the last -distance wins
    assert_one_line_error(b, "--zarr", "--overwrite")
    assert sorted(p.name for p in (tmp_path / "s.zarr").rglob("*")) == before
    c = run_cli(BASE + ["-distance", "70", "--zarr", "s.zarr", "--overwrite", "--workers", "1"], tmp_path)
    assert c.returncode == 0, c.stderr


def test_dataset_flags(tmp_path):
    assert_one_line_error(run_cli(BASE + ["--frames", "3"], tmp_path), "--frames", "--zarr")
    assert_one_line_error(run_cli(BASE + ["--frames", "0", "--zarr", "x.zarr"], tmp_path), "--frames")
    assert_one_line_error(run_cli(BASE + ["--frames", "2", "--zarr", "x.zarr"], tmp_path), "--frames", "-osc")
    assert_one_line_error(
        run_cli(BASE + ["--orientations", "2", "--zarr", "x.zarr", "-floatfile", "a.bin"], tmp_path),
        "-floatfile",
        "export",
    )


def test_export_a_frame_as_the_c_programs_files(tmp_path):
    args = BASE[:-3] + ["-nopgm", "-noprogress", "-seed", "9", "-phi", "0", "-osc", "1", "-phisteps", "2"]
    p = run_cli(
        args
        + [
            "-floatfile",
            "direct.bin",
            "-intfile",
            "direct.img",
            "-noisefile",
            "direct_noise.img",
            "--zarr",
            "one.zarr",
            "--workers",
            "1",
            "--tile",
            "7",
        ],
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    q = run_cli(
        [
            "export",
            "one.zarr",
            "--frame",
            "0",
            "-floatfile",
            "e.bin",
            "-intfile",
            "e.img",
            "-noisefile",
            "e_noise.img",
            "-pgmfile",
            "e.pgm",
        ],
        tmp_path,
    )
    assert q.returncode == 0, q.stderr
    for mine, ref in (("e.bin", "direct.bin"), ("e.img", "direct.img"), ("e_noise.img", "direct_noise.img")):
        assert (tmp_path / mine).read_bytes() == (tmp_path / ref).read_bytes(), mine
    assert (tmp_path / "e.pgm").read_bytes().startswith(b"P5\n16 16\n")
    r = run_cli(args + ["--zarr", "series.zarr", "--frames", "3", "--workers", "1"], tmp_path)
    assert r.returncode == 0, r.stderr
    s = run_cli(["export", "series.zarr", "--frame", "2", "-intfile", "f2.img"], tmp_path)
    assert s.returncode == 0, s.stderr
    from bragg_dask.io.smv import read_smv

    keys, _ = read_smv(str(tmp_path / "f2.img"))
    assert float(keys["PHI"]) == 2.0
    assert_one_line_error(
        run_cli(["export", "series.zarr", "--frame", "3", "-floatfile", "x.bin"], tmp_path), "--frame"
    )
    assert_one_line_error(run_cli(["export", "nothere.zarr", "-floatfile", "x.bin"], tmp_path), "nothere.zarr")


def test_bad_input_through_the_installed_entry_point(tmp_path):
    """The checks run before any computation: a missing output folder, an empty -cell, -distance 0."""
    assert_one_line_error(run_cli(BASE + ["-floatfile", "nowhere/f.bin"], tmp_path), "-floatfile", "does not exist")
    assert_one_line_error(run_cli(BASE + ["-cell", "-N", "3"], tmp_path), "-cell", "1 to 6 values")
    assert_one_line_error(run_cli(BASE + ["-distance", "0"], tmp_path), "-distance")
    assert not list(tmp_path.iterdir())


def test_closed_stdout_is_quiet(tmp_path):
    """A reader that stops early (`bragg-dask ... | head -1`): exit 141, no traceback."""
    proc = subprocess.Popen(
        CLI
        + [
            "-cell",
            "50",
            "50",
            "50",
            "90",
            "90",
            "90",
            "-default_F",
            "10",
            "-N",
            "3",
            "-detpixels",
            "16",
            "-nonoise",
            "-nopgm",
            "-floatfile",
            "f.bin",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # before the program has printed anything (it is still importing)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and err == ""


@pytest.mark.parametrize("quick", ["1", "0"])
def test_process_ends_with_everything_written(tmp_path, quick):
    """The CLI ends its process without the interpreter's teardown (BRAGG_DASK_QUICK_EXIT=0: with it):
    the report, the files and the exit status are the same either way."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", BRAGG_DASK_QUICK_EXIT=quick)
    p = subprocess.run(
        CLI + BASE + ["-floatfile", "f.bin", "-intfile", "i.img"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert "wrote ./f.bin" in p.stdout and "wrote ./i.img" in p.stdout and p.stdout.endswith("\n")
    assert (tmp_path / "f.bin").stat().st_size == 16 * 16 * 4 and (tmp_path / "i.img").stat().st_size > 512
    bad = subprocess.run(CLI + BASE + ["-N", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("bragg-dask: error:") and len(bad.stderr.splitlines()) == 1


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_that_cannot_be_written_is_one_line_and_status_2(tmp_path):
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            CLI + BASE + ["-floatfile", "f.bin"],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["bragg-dask: error: standard output: [Errno 28] No space left on device"]


def test_a_store_resumes_with_its_own_tiles_when_no_tile_is_given(tmp_path):
    first = run_cli(BASE + ["--zarr", "s.zarr", "--tile", "8"], tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli(BASE + ["--zarr", "s.zarr"], tmp_path)  # the default tile (256, or 2048 on a GPU) differs
    assert again.returncode == 0, again.stderr
    assert "tiles computed: 0 of 4" in again.stdout


def test_a_store_runs_files_come_from_its_arrays_without_a_second_pass(tmp_path, monkeypatch):
    """One frame into a store with the int and noise files asked for: the images are made once, per
    tile in the store's second pass, and the files are those arrays (no conversion on the client)."""
    import zarr

    from bragg_dask import cli
    from bragg_dask.nanobragg import outputs

    def refuse(*a, **k):
        raise AssertionError("the client made an int or noise image again")

    args = [a for a in BASE if a not in ("-nonoise",)] + [
        "-seed",
        "7",
        "-intfile",
        "i.img",
        "-noisefile",
        "n.img",
        "--zarr",
        "s.zarr",
        "--tile",
        "8",
        "--quiet",
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(outputs, "int_image", refuse)
    monkeypatch.setattr(outputs, "noise_image", refuse)
    assert cli.main(args) == 0
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for name, f in (("int", "i.img"), ("noise", "n.img")):
        raw = (tmp_path / f).read_bytes()
        pixels = np.frombuffer(raw[len(raw) - 16 * 16 * 2 :], "<u2").reshape(16, 16)
        assert np.array_equal(pixels, np.asarray(g[name][0]))


def test_version_and_quiet_cluster_unless_verbose(tmp_path):
    import bragg_dask

    v = run_cli(["--version"], tmp_path)
    assert v.returncode == 0 and v.stdout.strip() == f"bragg-dask {bragg_dask.__version__}"
    quiet = run_cli(BASE + ["--zarr", "q.zarr", "--workers", "1"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "Scheduler at" not in quiet.stdout + quiet.stderr and "distributed." not in quiet.stdout + quiet.stderr
    loud = run_cli(BASE + ["--zarr", "v.zarr", "--workers", "1", "-v"], tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "Scheduler at" in loud.stderr and "Scheduler at" not in loud.stdout


def test_a_non_terminal_gets_the_progress_as_a_few_whole_lines(tmp_path):
    p = run_cli(
        [a for a in BASE if a != "-noprogress"] + ["--zarr", "p.zarr", "--tile", "4", "--workers", "1"], tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr + p.stdout
    bars = [ln for ln in p.stderr.splitlines() if ln.startswith("frame ")]
    assert 1 <= len(bars) <= 3 and "tiles 16/16" in bars[-1]


def test_the_main_jobs_output_is_short_in_a_log(tmp_path):
    """``make run``'s command (smaller image) on a non-terminal: at most 15 lines, none of Dask's."""
    import re

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    make = open(os.path.join(repo, "Makefile")).read()
    cmd = re.search(r"bragg-dask (-hkl demo\.hkl.*?--overwrite)", make, re.S).group(1).replace("\\\n", " ").split()
    cmd[cmd.index("-detpixels") + 1] = "128"
    subprocess.run(
        [sys.executable, os.path.join(repo, "examples", "make_demo_inputs.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    p = run_cli(cmd, tmp_path)
    assert p.returncode == 0, p.stderr
    lines = (p.stdout + p.stderr).splitlines()
    assert 5 <= len(lines) <= 15, lines
    assert not [ln for ln in lines if "distributed" in ln or "Scheduler" in ln or "Worker" in ln]


def test_the_cluster_libraries_records_stay_off_the_runs_report(capsys):
    """A tornado 'Exception in callback' traceback (distributed's sync interrupted by Ctrl-C logs one) or a
    distributed warning is not printed on stdout by the CLI's handler; the run's own lines are."""
    import io
    import logging

    from bragg_dask.cli import _StdoutHandler

    buf = io.StringIO()
    handler = _StdoutHandler(buf)
    for name, text in (
        ("tornado.application", "Exception in callback"),
        ("distributed.utils", "noise"),
        ("asyncio", "loop"),
        ("bokeh.server", "session"),
        ("bragg_dask.executors.dask", "ours"),
        ("bragg_dask", "ours too"),
    ):
        handler.handle(logging.LogRecord(name, logging.ERROR, __file__, 1, text, None, None))
    assert buf.getvalue().splitlines() == ["ours", "ours too"]
