"""One rule for every output of every command: never inside a store, never over an input, never two
outputs on one path; refused in one line (exit 2) before any work, nothing on disk changed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bragg_dask.cli import main

from .conftest import main_in, tree_state

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


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("made")
    files = ["-floatfile", "f.bin", "-intfile", "i.img", "-noisefile", "n.img"]
    assert main_in(d, SIM + files + ["--zarr", "s.zarr"]) == 0
    np.ones(32 * 32, "<f4").tofile(d / "ones.bin")
    return d


INTO_STORE = [
    ["preview", "s.zarr", "-o", "s.zarr/zarr.json"],
    ["preview", "s.zarr", "-o", "s.zarr/float/c/0/0/0"],
    ["preview", "s.zarr", "-o", "s.zarr/new.png"],
    ["export", "s.zarr", "-floatfile", "s.zarr/zarr.json"],
    ["export", "s.zarr", "-intfile", "s.zarr/int/zarr.json"],
    ["export", "s.zarr", "--nxmx", "s.zarr/x.h5"],
    ["export", "s.zarr", "--cbf", "s.zarr/x.cbf"],
    ["export", "s.zarr", "--all-frames", "--cbf", "s.zarr/x_#####.cbf"],
    ["noisify", "-floatfile", "f.bin", "-detpixels", "32", "-intfile", "s.zarr/zarr.json"],
    ["noisify", "-floatfile", "f.bin", "-detpixels", "32", "-pgmfile", "s.zarr/p.pgm"],
    SIM + ["-floatfile", "s.zarr/zarr.json", "-nopgm"],
    SIM + ["-intfile", "s.zarr/float/zarr.json", "-nopgm"],
    SIM + ["-nopgm", "-floatfile", "x.bin", "--zarr", "s.zarr/inner.zarr"],
]
OVER_INPUT = [
    ["noisify", "-floatfile", "f.bin", "-detpixels", "32", "-intfile", "f.bin"],
    ["noisify", "-floatfile", "ones.bin", "-detpixels", "32", "-noisefile", "ones.bin"],
    ["noisify", "-floatfile", "f.bin", "-detpixels", "32", "-header", "i.img", "-pgmfile", "i.img"],
]
TWO_ON_ONE = [
    ["export", "s.zarr", "-floatfile", "o.bin", "-intfile", "o.bin"],
    ["export", "s.zarr", "-intfile", "o.img", "--nxmx", "o.img"],
    ["export", "s.zarr", "-intfile", "o.cbf", "--cbf", "o.cbf"],
    ["noisify", "-floatfile", "f.bin", "-detpixels", "32", "-intfile", "o.img", "-noisefile", "o.img"],
    ["noisify", "-floatfile", "f.bin", "-detpixels", "32", "-intfile", "o.img", "-pgmfile", "o.img"],
    SIM + ["-floatfile", "o.bin", "-intfile", "o.bin"],
]


@pytest.mark.parametrize(
    "argv, why",
    [(a, "inside the Zarr store") for a in INTO_STORE]
    + [(a, "would overwrite the input") for a in OVER_INPUT]
    + [(a, "is also written by") for a in TWO_ON_ONE],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v[0] in ("export", "preview", "noisify") else str(v)[:40],
)
def test_an_output_into_a_store_over_an_input_or_over_another_output_is_refused(
    argv, why, made, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "w"
    shutil.copytree(made, work)
    monkeypatch.chdir(work)
    before = tree_state(work, ())
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bragg-dask: error: ") and why in lines[0], err
    assert tree_state(work, ()) == before  # nothing written, nothing changed


LATE = {  # a command of several outputs, and the writer of its last one, made to fail
    "export": (
        ["export", "s.zarr", "-floatfile", "o.bin", "-intfile", "o.img", "-pgmfile", "o.pgm"],
        "bragg_dask.cli.export.pgm_bytes",
    ),
    "export-mx": (
        ["export", "s.zarr", "--nxmx", "o.h5", "--cbf", "o.cbf", "-floatfile", "o.bin"],
        "bragg_dask.cli.export.write_streamed",
    ),
    "noisify": (
        [
            "noisify",
            "-floatfile",
            "f.bin",
            "-detpixels",
            "32",
            "-intfile",
            "o.img",
            "-noisefile",
            "n2.img",
            "-pgmfile",
            "o.pgm",
        ],
        "bragg_dask.cli.noisify._write",
    ),
    "simulation": (
        SIM + ["-floatfile", "o.bin", "-intfile", "o.img", "-pgmfile", "o.pgm"],
        "bragg_dask.io.pgm.pgm_bytes",
    ),
}


@pytest.mark.parametrize("command", list(LATE))
def test_a_late_failure_leaves_no_earlier_output_behind(command, made, tmp_path, monkeypatch, capsys):
    """The outputs of one command are placed together once all are written: when the last one fails
    (here a full disk in its writer), none of them is left, and files already under their names stay
    as they were."""
    argv, target = LATE[command]
    if command == "export-mx":
        pytest.importorskip("h5py")
        pytest.importorskip("fabio")
    work = tmp_path / "w"
    shutil.copytree(made, work)
    (work / "o.img").write_bytes(b"older")  # a file the command would replace: kept as it was
    before = tree_state(work)
    module, name = target.rsplit(".", 1)

    from bragg_dask.nanobragg.outputs import _writing

    holder = __import__(module, fromlist=[name])
    original = getattr(holder, name)

    def full(*args, **kwargs):
        if command == "noisify" and args[0] != "n2.img":  # noisify's last file is its noise image
            return original(*args, **kwargs)
        with _writing(args[0] if isinstance(args[0], str) else "o.bin"):  # as the writers report a fault
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(holder, name, full)
    assert main_in(work, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert tree_state(work) == before


def test_a_batch_whose_placing_fails_puts_everything_back(tmp_path, monkeypatch):
    """The outputs' renames at the end of a command: one that fails restores the files the others had
    replaced and removes those they made, in one line naming the file."""
    import os

    from bragg_dask.errors import BraggDaskError
    from bragg_dask.io.atomic import atomic_write, batch

    (tmp_path / "a").write_bytes(b"old a")
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("c"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(BraggDaskError, match="cannot write .*c: No space left"):
        with batch():
            for name in ("a", "b", "c"):
                with atomic_write(str(tmp_path / name)) as fh:
                    fh.write(b"new " + name.encode())
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["a"] and (tmp_path / "a").read_bytes() == b"old a"
