"""A store that checks itself: every chunk carries its CRC-32C, a done tile always has its file, and a
damaged file is never read as data.

For each layout a store can have (tiles of one frame; frames of one tile, a chunk per frame; frames of
several tiles, a shard per frame) and each array in it, each damage (deleted, truncated, emptied, a
flipped bit, a shard index that lies): ``scan`` (what ``verify`` prints) names the file; a resume
computes what it held again, to the bytes of a clean run; ``verify --repair`` does the same from the
store's own record; export, preview and noisify refuse the store in one line naming the frame, tile and
file, and change nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bragg_dask import store

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
    "--zarr",
    "s.zarr",
]
LAYOUTS = {
    "tiles": BASE + ["-intfile", "i.img", "-noisefile", "n.img", "--tile", "16"],
    "frame-chunks": BASE + ["--frames", "2", "-phistep", "0.1", "--tile", "32"],
    "shards": BASE + ["--frames", "2", "-phistep", "0.1", "--tile", "16"],
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Each layout's store, complete; the shards' store also holds the detector model's int and noise."""
    out = {}
    for name, argv in LAYOUTS.items():
        d = tmp_path_factory.mktemp(name)
        assert main_in(d, argv) == 0
        if name != "tiles":
            assert main_in(d, ["noisify", "s.zarr", "--all-frames", "-seed", "5", "-psf", "gauss"]) == 0
        out[name] = d
    return out


def _data(root: Path) -> dict:
    """Every data file of a store (not its metadata, whose attributes hold times) and its bytes' digest."""
    return {k: v for k, v in tree_state(root).items() if not k.endswith("zarr.json")}


def _copy(clean, layout, tmp_path) -> Path:
    work = tmp_path / "w"
    shutil.copytree(clean[layout], work, ignore=shutil.ignore_patterns("*.img", "*.bin"))
    return work


def _chunk_files(zstore: Path, array: str) -> list[Path]:
    return sorted(p for p in (zstore / array).rglob("*") if p.is_file() and p.name != "zarr.json")


def _damage(f: Path, how: str) -> None:
    raw = f.read_bytes()
    if how == "delete":
        f.unlink()
    elif how == "truncate":
        f.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        f.write_bytes(b"")
    elif how == "flip":
        b = bytearray(raw)
        b[len(b) // 3] ^= 0x10
        f.write_bytes(bytes(b))
    elif how == "index":  # a bit of a shard's index (its last bytes), or of any file's checksum
        b = bytearray(raw)
        b[-6] ^= 0x01
        f.write_bytes(bytes(b))
    else:
        raise AssertionError(how)


def _arrays(zstore: Path) -> list[str]:
    return sorted(p.name for p in zstore.iterdir() if p.is_dir())


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_clean_store_is_whole(clean, layout):
    found = store.scan(str(clean[layout] / "s.zarr"))
    assert found.clean and found.checksummed and found.done.all(), [p.line() for p in found.problems]
    assert not found.redo.any()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("how", ["delete", "truncate", "empty", "flip", "index"])
def test_every_damage_of_every_array_is_found(clean, tmp_path, layout, how):
    """Each array of the store in turn: its (last) chunk file damaged, the scan names that file, and the
    store is never taken as whole."""
    arrays = _arrays(clean[layout] / "s.zarr")
    assert {"float", "tiles_done", "tile_stats", "noise_seed", "x_mm"} <= set(arrays)
    for array in arrays:
        work = _copy(clean, layout, tmp_path / array)
        files = _chunk_files(work / "s.zarr", array)
        assert files, array
        _damage(files[-1], how)
        found = store.scan(str(work / "s.zarr"))
        named = [p for p in found.problems if p.file.startswith(str(files[-1]))]
        assert named, (array, how, [p.line() for p in found.problems])
        if array in ("float", "int", "noise", "tile_stats", "tiles_done"):
            assert found.redo.any() and not found.done.all(), (array, how)  # its tiles are computed again


def test_an_image_chunk_names_its_frame_and_tile(clean, tmp_path):
    work = _copy(clean, "tiles", tmp_path)
    _damage(work / "s.zarr" / "float" / "c" / "0" / "1" / "0", "flip")
    (p,) = store.scan(str(work / "s.zarr")).problems
    assert (p.frame, p.tile) == (0, (1, 0)) and "CRC-32C" in p.why
    assert "frame 0, tile (1, 0)" in p.line()


def test_an_inner_chunk_of_a_shard_names_its_tile(clean, tmp_path):
    work = _copy(clean, "shards", tmp_path)
    shard = work / "s.zarr" / "float" / "c" / "1" / "0" / "0"
    _damage(shard, "flip")  # a third of the way in: inside an inner chunk
    found = store.scan(str(work / "s.zarr"))
    assert [p.frame for p in found.problems] == [1] and found.problems[0].tile is not None
    assert found.redo[1].any() and not found.redo[0].any()


# ---- a resume and verify --repair make the clean run's bytes again ------------------------------------


SEVERAL = {  # array -> damage: every kind at once, in every kind of file
    "float": "delete",
    "tile_stats": "truncate",
    "tiles_done": "flip",
    "max_I": "delete",
    "x_mm": "flip",
    "orientation": "empty",
    "int_scale": "index",
}


def _damage_several(zstore: Path, layout: str) -> None:
    plan = dict(SEVERAL)
    if layout == "tiles":
        plan.update({"int": "flip", "noise": "delete"})
    for array, how in plan.items():  # an image's last tile: not the one whose done flag is damaged
        files = _chunk_files(zstore, array)
        _damage(files[-1] if array in ("float", "noise") else files[0], how)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_resume_computes_the_damage_again_to_the_clean_bytes(clean, tmp_path, layout, caplog):
    work = _copy(clean, layout, tmp_path)
    _damage_several(work / "s.zarr", layout)
    assert not store.scan(str(work / "s.zarr")).clean
    assert main_in(work, LAYOUTS[layout]) == 0
    said = caplog.text  # how many, and why: a line per problem
    assert "problems found" in said and "computed again" in said, said
    for array in SEVERAL:
        assert f"s.zarr/{array}/" in said, (array, said)
    if layout != "tiles":  # the detector model's frames computed again are the simulation's now
        assert main_in(work, ["noisify", "s.zarr", "--all-frames", "-seed", "5", "-psf", "gauss"]) == 0
    assert _data(work / "s.zarr") == _data(clean[layout] / "s.zarr")
    assert store.scan(str(work / "s.zarr")).clean


@pytest.mark.parametrize("layout", ["tiles", "shards"])
def test_verify_repair_mends_the_store_from_its_own_record(clean, tmp_path, layout, capsys):
    """From any folder: the recorded command runs again in its own; the detector model's frames go
    through the model again with their recorded flags and seed: the clean store's bytes, all of them."""
    work = _copy(clean, layout, tmp_path)
    meta_file = work / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    command = meta["attributes"]["bragg_dask"]["command"]
    assert command["argv"] == LAYOUTS[layout] and Path(command["cwd"]) == clean[layout]
    command["cwd"] = str(work)  # the copy's own folder (the original's is the clean store)
    meta_file.write_text(json.dumps(meta))
    _damage_several(work / "s.zarr", layout)
    if layout == "shards":
        _damage(_chunk_files(work / "s.zarr", "noise")[0], "index")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main_in(elsewhere, ["verify", str(work / "s.zarr")]) == 1
    out = capsys.readouterr().out
    assert "to compute again" in out and "--repair" in out
    assert main_in(elsewhere, ["verify", str(work / "s.zarr"), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired:" in out and "whole" in out, out
    if layout == "shards":
        assert "detector model applied again" in out
    assert _data(work / "s.zarr") == _data(clean[layout] / "s.zarr")
    assert not list(elsewhere.iterdir())  # nothing written where verify ran
    assert main_in(elsewhere, ["verify", str(work / "s.zarr")]) == 0


def test_verify_says_what_it_cannot_repair(clean, tmp_path, capsys):
    """No recorded command (a store of the Python API), or one whose inputs changed: one line, exit 2,
    nothing in the store changed."""
    work = _copy(clean, "tiles", tmp_path)
    meta_file = work / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["bragg_dask"]["command"]["argv"] = [
        a if a != "100" else "101" for a in meta["attributes"]["bragg_dask"]["command"]["argv"]
    ]  # -default_F
    meta["attributes"]["bragg_dask"]["command"]["cwd"] = str(work)
    meta_file.write_text(json.dumps(meta))
    _damage(_chunk_files(work / "s.zarr", "float")[0], "flip")
    before = tree_state(work / "s.zarr")
    assert main_in(work, ["verify", "s.zarr", "--repair"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another configuration" in err[0] and "--repair" in err[0], err
    assert tree_state(work / "s.zarr") == before
    meta["attributes"]["bragg_dask"].pop("command")
    meta_file.write_text(json.dumps(meta))
    before = tree_state(work / "s.zarr")
    assert main_in(work, ["verify", "s.zarr", "--repair"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not record the command" in err[0], err
    assert tree_state(work / "s.zarr") == before


# ---- readers refuse a damaged store ---------------------------------------------------------------


READERS = {
    "export": ["export", "s.zarr", "-floatfile", "o.bin"],
    "export-nxmx": ["export", "s.zarr", "--cbf", "o.cbf"],
    "preview": ["preview", "s.zarr", "-o", "o.png"],
    "noisify": ["noisify", "s.zarr", "-seed", "2"],
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("how", ["delete", "flip", "truncate"])
def test_readers_refuse_a_damaged_frame_in_one_line(clean, tmp_path, capsys, reader, how):
    if reader == "export-nxmx":
        pytest.importorskip("fabio")
    work = _copy(clean, "tiles", tmp_path)
    _damage(work / "s.zarr" / "float" / "c" / "0" / "0" / "1", how)
    before = tree_state(work)
    assert main_in(work, READERS[reader]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "is damaged: frame 0, tile (0, 1)" in lines[0] and "float/c/0/0/1" in lines[0], lines[0]
    assert "verify" in lines[0] and "--repair" in lines[0]
    assert tree_state(work) == before


@pytest.mark.parametrize("array", ["noise_seed", "tiles_done", "tile_stats", "int_scale"])
def test_readers_refuse_damaged_records(clean, tmp_path, capsys, array):
    work = _copy(clean, "tiles", tmp_path)
    _damage(_chunk_files(work / "s.zarr", array)[0], "flip")
    for argv in READERS.values():
        if "--cbf" in argv:
            continue
        assert main_in(work, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"/{array}/" in err[0] and "is damaged" in err[0], err


def test_a_chunk_changed_between_the_check_and_the_read_is_still_refused(clean, tmp_path):
    """The readers' own reads check every chunk too (StoreFrame.bands)."""
    from bragg_dask.errors import ConfigError

    work = _copy(clean, "shards", tmp_path)
    frame = store.StoreFrame(str(work / "s.zarr"), 1, flag="export")
    _damage(work / "s.zarr" / "float" / "c" / "1" / "0" / "0", "index")
    with pytest.raises(ConfigError, match="is damaged: frame 1"):
        list(frame.bands())


# ---- the verify subcommand's surface --------------------------------------------------------------


def test_verify_surface(clean, tmp_path, capsys):
    assert main_in(tmp_path, ["verify", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: bragg-dask verify STORE [--repair]" in out and "--repair" in out.split("usage")[1]
    for argv, needle in (
        (["verify"], "store"),
        (["verify", "nope.zarr"], "no store at nope.zarr"),
        (["verify", str(clean["tiles"] / "s.zarr"), "--fix"], "--fix"),
        (["verify", str(clean["tiles"])], "not a bragg_dask store"),
    ):
        assert main_in(tmp_path, argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], (argv, err)
    assert main_in(tmp_path, ["verify", str(clean["shards"] / "s.zarr")]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("2 of 2 frames complete"), out


def test_damaged_metadata_is_reported_not_repaired(clean, tmp_path, capsys):
    work = _copy(clean, "tiles", tmp_path)
    (work / "s.zarr" / "tile_stats" / "zarr.json").write_text("{")
    (work / "s.zarr" / "x_mm" / "zarr.json").unlink()
    before = tree_state(work)
    assert main_in(work, ["verify", "s.zarr"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert any("tile_stats/zarr.json" in ln for ln in out) and any("x_mm/zarr.json: missing" in ln for ln in out)
    assert main_in(work, ["verify", "s.zarr", "--repair"]) == 2
    assert tree_state(work) == before


def test_an_all_zero_tile_has_its_file(tmp_path):
    """A tile with nothing on it (outside the -roi: all zero) is a file like any other, so a missing one
    is damage."""
    argv = BASE + ["--tile", "16", "-roi", "0", "15", "0", "15"]
    assert main_in(tmp_path, argv) == 0
    f = tmp_path / "s.zarr" / "float" / "c" / "0" / "1" / "1"
    assert f.is_file()
    data = np.frombuffer(__import__("numcodecs").Zstd().decode(f.read_bytes()[:-4]), np.float32)
    assert data.size == 256 and not data.any()
    f.unlink()
    assert not store.scan(str(tmp_path / "s.zarr")).clean


# ---- the detector model's frames, readers on frames the run never wrote, unreadable files --------------


@pytest.fixture(scope="module")
def nonoise_model(tmp_path_factory):
    """A store made with -nonoise (float and int), then the detector model on frame 1 of 2 (int and a
    new noise array): frame 0 has no noise image, and it is no damage."""
    d = tmp_path_factory.mktemp("nonoise")
    argv = BASE + ["-nonoise", "--frames", "2", "-phistep", "0.1", "--tile", "16"]
    assert main_in(d, argv) == 0
    assert main_in(d, ["noisify", "s.zarr", "--frame", "1", "-seed", "5", "-psf", "gauss", "-readout", "2"]) == 0
    return d, argv


def test_a_store_noisify_added_noise_to_is_whole_and_mended(nonoise_model, tmp_path, caplog):
    clean, argv = nonoise_model
    assert store.scan(str(clean / "s.zarr")).clean
    for damaged in ("float", "noise", "int"):  # frame 1 (the model's) damaged: resume, then repair
        work = tmp_path / damaged
        shutil.copytree(clean, work)
        _damage(_chunk_files(work / "s.zarr", damaged)[-1], "flip")
        assert main_in(work, argv) == 0  # a plain resume: frame 1 is the simulation's again, no noise of its own
        assert store.scan(str(work / "s.zarr")).clean
        meta = json.loads((work / "s.zarr" / "zarr.json").read_text())["attributes"]["bragg_dask"]
        assert "1" not in ((meta.get("response") or {}).get("frames") or {})
        shutil.rmtree(work)
        shutil.copytree(clean, work)
        _damage(_chunk_files(work / "s.zarr", damaged)[-1], "flip")
        meta_file = work / "s.zarr" / "zarr.json"
        meta = json.loads(meta_file.read_text())
        meta["attributes"]["bragg_dask"]["command"]["cwd"] = str(work)
        meta_file.write_text(json.dumps(meta))
        assert main_in(work, ["verify", "s.zarr", "--repair"]) == 0
        assert _data(work / "s.zarr") == _data(clean / "s.zarr"), damaged  # the model applied again: same bytes


def test_readers_take_a_frame_the_model_never_wrote_for_what_it_is(nonoise_model, tmp_path, capsys):
    """Frame 0 has no noise image (the run had -nonoise; the model wrote frame 1): export makes one from the
    float image with a given seed, or says it needs one; never "damaged"."""
    clean, _ = nonoise_model
    assert main_in(clean, ["export", "s.zarr", "--frame", "0", "-noisefile", str(tmp_path / "n.img")]) == 2
    err = capsys.readouterr().err
    assert "no noise seed" in err and "damaged" not in err, err
    out = str(tmp_path / "n.img")
    assert main_in(clean, ["export", "s.zarr", "--frame", "0", "-noisefile", out, "-seed", "4"]) == 0
    assert main_in(clean, ["export", "s.zarr", "--frame", "1", "-noisefile", str(tmp_path / "m.img")]) == 0


def test_an_unfinished_store_is_read_from_its_float_image(clean, tmp_path):
    """A run stopped after its tiles, before the int and noise images (complete false, no int chunks):
    export makes the int image from the float image, as for any store without one."""
    work = _copy(clean, "tiles", tmp_path)
    shutil.rmtree(work / "s.zarr" / "int" / "c")
    meta_file = work / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["bragg_dask"]["complete"] = False
    meta_file.write_text(json.dumps(meta))
    from bragg_dask.store import consolidate

    consolidate(str(work / "s.zarr"))
    assert store.scan(str(work / "s.zarr")).clean
    assert main_in(work, ["export", "s.zarr", "-intfile", "o.img"]) == 0
    assert main_in(clean["tiles"], ["export", "s.zarr", "-intfile", str(tmp_path / "ref.img")]) == 0
    assert (work / "o.img").read_bytes() == (tmp_path / "ref.img").read_bytes()


def test_damage_in_another_frame_is_one_line_or_nothing(clean, tmp_path, capsys):
    """A damaged done flag of frame 1: readers of frame 1 (or of every frame) refuse in one line; a reader
    of frame 0 alone does not read it."""
    work = _copy(clean, "shards", tmp_path)
    _damage(work / "s.zarr" / "tiles_done" / "c" / "1" / "0" / "0", "flip")
    for argv in (
        ["noisify", "s.zarr", "--frame", "1", "-seed", "2"],
        ["noisify", "s.zarr", "--all-frames"],
        ["export", "s.zarr", "--all-frames", "--cbf", "o_#####.cbf"],
        ["preview", "s.zarr", "--frame", "1", "-o", "o.png"],
    ):
        if "--cbf" in argv and __import__("importlib.util").util.find_spec("fabio") is None:
            continue
        assert main_in(work, argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is damaged: frame 1" in err[0] and "tiles_done" in err[0], err
    assert main_in(work, ["export", "s.zarr", "--frame", "0", "-floatfile", "o.bin"]) == 0


@pytest.mark.parametrize("how", ["folder", "unreadable"])
def test_an_unreadable_file_is_a_problem_not_a_traceback(clean, tmp_path, capsys, how):
    import os

    work = _copy(clean, "tiles", tmp_path)
    f = work / "s.zarr" / "float" / "c" / "0" / "1" / "1"
    if how == "folder":
        f.unlink()
        f.mkdir()
        (f / "x").write_text("x")
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a file whatever its mode")
        f.chmod(0)
    assert main_in(work, ["verify", "s.zarr"]) == 1
    out = capsys.readouterr().out
    assert "float/c/0/1/1: unreadable" in out and "tile (1, 1)" in out, out
    assert main_in(work, ["export", "s.zarr", "-floatfile", "o.bin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable" in err[0], err


def test_a_chunk_of_another_array_with_its_own_checksum_is_found(clean, tmp_path):
    """A whole, checksummed chunk in the wrong place (copied from another array): its size gives it away."""
    work = _copy(clean, "tiles", tmp_path)
    src = work / "s.zarr" / "int" / "c" / "0" / "0" / "0"
    dst = work / "s.zarr" / "float" / "c" / "0" / "0" / "0"
    dst.write_bytes(src.read_bytes())
    (p,) = store.scan(str(work / "s.zarr")).problems
    assert p.file == str(dst) and "bytes, not the chunk's" in p.why


def test_a_failed_resume_keeps_the_models_frames(nonoise_model, tmp_path):
    """A resume that stopped on the way (complete false, the store's was_complete kept): the next run still
    takes the store for a completed one and keeps the model's frame."""
    clean, argv = nonoise_model
    work = tmp_path / "w"
    shutil.copytree(clean, work)
    meta_file = work / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["bragg_dask"].update(complete=False, was_complete=True)
    meta_file.write_text(json.dumps(meta))
    from bragg_dask.store import consolidate

    consolidate(str(work / "s.zarr"))
    assert main_in(work, argv) == 0
    assert _data(work / "s.zarr") == _data(clean / "s.zarr")
    meta = json.loads(meta_file.read_text())["attributes"]["bragg_dask"]
    assert "1" in meta["response"]["frames"] and meta["complete"] and "was_complete" not in meta


def test_the_repair_takes_no_cluster_option_from_the_record(clean, tmp_path, capsys):
    """Abbreviated spellings of the cluster's options in the recorded command are parsed and replaced: the
    repair's cluster listens on this machine only."""
    work = _copy(clean, "tiles", tmp_path)
    meta_file = work / "s.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["bragg_dask"]["command"].update(
        cwd=str(work), argv=LAYOUTS["tiles"] + ["--lis=0.0.0.0", "--dash=0.0.0.0:0", "--overw"]
    )
    meta_file.write_text(json.dumps(meta))
    _damage(_chunk_files(work / "s.zarr", "float")[0], "flip")
    assert main_in(work, ["verify", "s.zarr", "--repair"]) == 0
    out = capsys.readouterr().out
    assert "0.0.0.0" not in out and "repaired:" in out
    assert _data(work / "s.zarr") == _data(clean["tiles"] / "s.zarr")
