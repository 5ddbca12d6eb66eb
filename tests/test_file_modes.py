"""Every file a command writes is created as the C program creates its outputs: mode 0666 less the
user's umask (0644 under 022, 0664 under 002), never a temporary file's 0600, so that others on a
shared cluster can read what the umask lets them read: the main command's files and its store, export,
preview and noisify."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SIM = [
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
    "-seed",
    "3",
]


def _run(args: list[str], cwd: Path, umask: int) -> None:
    code = f"import os, sys; os.umask({umask:#o}); from bragg_dask.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert p.returncode == 0, p.stderr


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    _run(
        SIM
        + ["-floatfile", "f.bin", "-intfile", "i.img", "-noisefile", "n.img", "-pgmfile", "p.pgm", "--zarr", "s.zarr"],
        tmp_path,
        umask,
    )
    _run(["export", "s.zarr", "-floatfile", "e.bin", "-intfile", "e.img"], tmp_path, umask)
    _run(["preview", "s.zarr", "-o", "v.png"], tmp_path, umask)
    _run(
        [
            "noisify",
            "-floatfile",
            "f.bin",
            "-detpixels",
            "32",
            "-intfile",
            "ni.img",
            "-noisefile",
            "nn.img",
            "-pgmfile",
            "np.pgm",
            "-seed",
            "1",
        ],
        tmp_path,
        umask,
    )
    modes = _modes(tmp_path)
    expect = 0o666 & ~umask
    for name in ["f.bin", "i.img", "n.img", "p.pgm", "e.bin", "e.img", "v.png", "ni.img", "nn.img", "np.pgm"]:
        assert modes.pop(name) == expect, (name, oct(expect))
    store = {k: v for k, v in modes.items() if k.startswith("s.zarr")}
    assert any("/c/" in k for k in store) and any(k.endswith("zarr.json") for k in store)  # chunks, metadata
    assert {k: oct(v) for k, v in store.items() if v != expect} == {}
