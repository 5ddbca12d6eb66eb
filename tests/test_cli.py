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
BASE = ["-cell", "50", "50", "50", "90", "90", "90", "-default_F", "100", "-N", "5", "-distance", "50",
        "-pixel", "0.2", "-detpixels", "16", "-lambda", "1.0", "-nonoise", "-nopgm", "-noprogress"]


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


def test_c_parity_is_refused_until_implemented(tmp_path):
    assert_one_line_error(run_cli(BASE + ["--parity", "c"], tmp_path), "--parity")
    assert_one_line_error(run_cli(BASE + ["--c-threads", "4"], tmp_path), "--c-threads")


def test_zarr_run_through_local_cluster(tmp_path):
    p = run_cli(BASE + ["-floatfile", "f.bin", "--zarr", "run.zarr", "--tile", "5", "--workers", "2"], tmp_path)
    assert p.returncode == 0, p.stderr
    import zarr

    g = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    ref = np.fromfile(tmp_path / "f.bin", "<f4").reshape(16, 16)
    assert np.array_equal(np.asarray(g["float"][0]), ref)
    assert "store:" in p.stdout
