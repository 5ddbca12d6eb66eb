"""A store on a filesystem that fills up mid-run: one line on stderr, the fault recorded in the store
(``last_error``, in the room the run kept for it), nothing on stdout but the run's own lines, no hang
even when stdout is a log file on the same full disk; freed, the same command finishes the store whole.

A real full filesystem is needed (a small tmpfs): the tests mount one where this process may (root with
the mount capability), and are skipped elsewhere, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

RUN = [
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
    "0.1",
    "-detpixels",
    "512",
    "-lambda",
    "1.0",
    "-nopgm",
    "-seed",
    "3",
    "--tile",
    "64",
    "--workers",
    "2",
]


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs at ``tmp_path / "disk"``, 7.2 MiB of it taken by a file that can be removed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"needs a small filesystem of its own: cannot mount a tmpfs here ({p.stderr.strip()})")
    try:
        (disk / "filler").write_bytes(bytes(7400 << 10))
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.parametrize("log_on_disk", [False, True], ids=["stdout-elsewhere", "stdout-on-the-full-disk"])
def test_a_full_disk_ends_in_one_line_with_the_fault_recorded(small_disk, tmp_path, log_on_disk):
    store = small_disk / "s.zarr"
    argv = [sys.executable, "-m", "bragg_dask", *RUN, "-intfile", str(small_disk / "i.img"), "--zarr", str(store)]
    log = (small_disk if log_on_disk else tmp_path) / "run.log"
    with open(log, "w") as out:
        p = subprocess.run(
            argv,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=240,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert "--zarr" in lines[0] and "No space left on device" in lines[0] and "re-run the same command" in lines[0]
    text = log.read_text()
    assert "Traceback" not in text and "Compute Failed" not in text, text
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["bragg_dask"]
    assert meta["complete"] is False and "No space left on device" in meta["last_error"]
    assert not (store / ".bragg_dask.reserve").exists()
    assert sorted(e for e in os.listdir(small_disk) if e.startswith(".")) == []  # no staged store left beside
    (small_disk / "filler").unlink()
    log.unlink()
    p = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONWARNINGS="ignore")
    )
    assert p.returncode == 0, p.stderr
    from bragg_dask import store as zstore

    found = zstore.scan(str(store))
    assert found.clean and found.done.all()
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["bragg_dask"]
    assert meta["complete"] is True and "last_error" not in meta
