"""A store whose metadata is damaged is never read as a store, resumed, nor taken for something else:
export, preview, noisify STORE and the simulation run on it end in one line naming the damaged file
(exit 2, no traceback), and nothing in the store changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bragg_dask.cli import main

from .conftest import main_in, tree_state

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
    "0.2",
    "-detpixels",
    "32",
    "-lambda",
    "1.0",
    "-noprogress",
    "-nopgm",
    "-seed",
    "3",
    "-intfile",
    "i.img",
    "-noisefile",
    "n.img",
    "--tile",
    "16",
    "--zarr",
    "s.zarr",
]
COMMANDS = {
    "export": ["export", "s.zarr", "-floatfile", "o.bin"],
    "preview": ["preview", "s.zarr", "-o", "o.png"],
    "noisify": ["noisify", "s.zarr", "-psf", "gauss"],
    "resume": RUN,
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("damage")
    assert main_in(d, RUN) == 0
    return d / "s.zarr"


def _arrays(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if p.is_dir())


DAMAGE = {
    "garbage": lambda f: f.write_text("{not json"),
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),
    "empty": lambda f: f.write_bytes(b""),
    "missing": lambda f: f.unlink(),
    "not v3": lambda f: f.write_text(json.dumps({"zarr_format": 2})),
}


def _check(argv, work: Path, monkeypatch, capsys, needle: str) -> None:
    monkeypatch.chdir(work)
    before = tree_state(work / "s.zarr")
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "is a damaged store" in lines[0] and needle in lines[0], lines[0]
    assert tree_state(work / "s.zarr") == before


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("damage", [d for d in DAMAGE if d != "missing"])  # no zarr.json at all: not a store
def test_damaged_group_metadata_is_one_line_on_every_command(made, tmp_path, monkeypatch, capsys, command, damage):
    work = tmp_path / "w"
    shutil.copytree(made, work / "s.zarr")
    DAMAGE[damage](work / "s.zarr" / "zarr.json")
    _check(COMMANDS[command], work, monkeypatch, capsys, "s.zarr/zarr.json")


def test_group_metadata_without_our_record_is_named(made, tmp_path, monkeypatch, capsys):
    work = tmp_path / "w"
    shutil.copytree(made, work / "s.zarr")
    meta = json.loads((work / "s.zarr" / "zarr.json").read_text())
    meta["attributes"].pop("bragg_dask")
    (work / "s.zarr" / "zarr.json").write_text(json.dumps(meta))
    for argv in COMMANDS.values():
        _check(argv, work, monkeypatch, capsys, "no bragg_dask record")


@pytest.mark.parametrize("damage", ["garbage", "missing", "not v3"])
@pytest.mark.parametrize("command", ["export", "noisify", "resume"])
def test_damaged_array_metadata_of_any_array_is_one_line(made, tmp_path, monkeypatch, capsys, damage, command):
    """Every array of the store in turn: its metadata damaged, the command names that array's file."""
    for name in _arrays(made):
        work = tmp_path / f"w-{name}"
        shutil.copytree(made, work / "s.zarr")
        DAMAGE[damage](work / "s.zarr" / name / "zarr.json")
        _check(COMMANDS[command], work, monkeypatch, capsys, f"s.zarr/{name}/zarr.json")


def test_a_missing_array_folder_is_one_line(made, tmp_path, monkeypatch, capsys):
    for name in ("float", "tiles_done", "tile_stats", "noise_seed", "int_scale"):
        work = tmp_path / f"w-{name}"
        shutil.copytree(made, work / "s.zarr")
        shutil.rmtree(work / "s.zarr" / name)
        for argv in COMMANDS.values():
            _check(argv, work, monkeypatch, capsys, f"s.zarr/{name}/zarr.json: missing")
