"""A dataset of many small frames: several frames a shard file (``store.layout.shard_frames``), so that the
files are a few per shard, not per frame; every frame the same as alone, and the same bytes whatever the
tiling; one frame written into its shard (noisify, repair) keeps the others; damage in one frame of a
shard is that frame's; a resume redoes whole shards, exactly once."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from bragg_dask import simulation_from_args
from bragg_dask.planning.vary import variation_of

from .conftest import main_in

BASE = "-cell 50 60 70 90 90 90 -default_F 100 -distance 100 -detpixels 40 -oversample 1 -misset 10 20 30".split()
DOC = {"frames": 40, "seed": 5, "rotation": "uniform", "fluence": {"log_uniform": [1e23, 1e24]}}
ARRAYS = ("float", "int", "noise", "bragg", "tiles_done", "refl_hkl", "refl_xy_px", "refl_photons", "refl_offset",
          "vary_fluence", "orientation", "noise_seed", "max_I", "mean", "rms", "rmsd", "int_scale")  # fmt: skip


def _run(tmp_path, capsys, name: str, *extra: str) -> str:
    run = [*BASE, "--vary", "v.json", "--labels", "bragg", "--zarr", name, "-noprogress", "-seed", "9",
           "--psf", "gauss", "--psf-radius", "2", *extra]  # fmt: skip
    assert main_in(tmp_path, run) == 0, capsys.readouterr().err
    return str(tmp_path / name)


def _arrays(path: str) -> dict:
    g = zarr.open_group(path, mode="r")
    return {name: np.asarray(g[name][...]) for name in ARRAYS}


@pytest.fixture
def dataset(tmp_path, capsys):
    (tmp_path / "v.json").write_text(json.dumps(DOC))
    return _run(tmp_path, capsys, "s.zarr")


def _files(path: str, array: str) -> int:
    return sum(len(fs) for _, _, fs in os.walk(os.path.join(path, array)))


def test_a_dataset_of_small_frames_is_a_few_files_a_shard(dataset, tmp_path):
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.store import read_frame

    g = zarr.open_group(dataset, mode="r")
    assert g["float"].shards == (3, 40, 40) and g["tiles_done"].chunks == (3, 1, 1)  # 40 frames / MIN_SHARDS
    for name in ("float", "int", "noise", "bragg", "tiles_done", "tile_stats"):
        assert _files(dataset, name) == 14 + 1, name  # 14 shards (the last of one frame) and zarr.json
    sim0 = simulation_from_args(BASE, cwd=str(tmp_path))
    for frame in make_frames(sim0, DatasetSpec("vary", 40, variation=variation_of(DOC))):
        alone = run_serial(frame.simulation(sim0)).image
        assert read_frame(dataset, frame.index).tobytes() == alone.tobytes(), frame.index
        assert np.array_equal(read_frame(dataset, frame.index, "bragg"), alone)  # (no water: the same)
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 0


def test_the_same_bytes_whatever_the_tiling(dataset, tmp_path, capsys):
    tiled = _run(tmp_path, capsys, "t.zarr", "--tile", "16")
    assert zarr.open_group(tiled, mode="r")["float"].shards == (3, 48, 48)  # 3 x 3 tiles a frame
    a, b = _arrays(dataset), _arrays(tiled)
    for name in ARRAYS:
        if name == "tiles_done":
            assert a[name].all() and b[name].all()
            continue
        assert a[name].tobytes() == b[name].tobytes(), name


def test_one_frame_into_its_shard_keeps_the_others(dataset, tmp_path, capsys):
    """noisify STORE --frame K with the run's model writes frame K again: every array the same bytes."""
    before = _arrays(dataset)
    meta = dict(zarr.open_group(dataset, mode="r").attrs)["bragg_dask"]
    seed = meta["response"]["frames"]["4"]["noise_seed"]
    one = ["noisify", "s.zarr", "--frame", "4", "-psf", "gauss", "-psf_radius", "2", "-seed", str(seed - 4)]
    fwhm = meta["response"]["frames"]["4"]["model"]["psf_fwhm"]
    assert main_in(tmp_path, [*one, "-psf_fwhm", repr(fwhm)]) == 0, capsys.readouterr().err
    after = _arrays(dataset)
    for name in ARRAYS:
        assert before[name].tobytes() == after[name].tobytes(), name
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 0


@pytest.mark.parametrize("array", ["float", "noise"])
def test_damage_in_one_frame_of_a_shard_is_that_frames_and_repaired(dataset, tmp_path, capsys, array):
    from bragg_dask import store
    from bragg_dask.store import shards

    before = _arrays(dataset)
    g = store.opened(dataset, "r")
    lay = shards.layout(g[array])
    file = g._shard_path(array, 7)  # frame 7: the second of shard 2 (frames 6, 7, 8)
    raw = bytearray(open(file, "rb").read())
    off = int(shards.read_index(lay, bytes(raw), file)[1 * lay.per_frame, 0])
    raw[off + 5] ^= 0x20
    open(file, "wb").write(bytes(raw))
    found = store.scan(dataset)
    assert [p.frame for p in found.problems] == [7] and found.redo[7].all() and not found.redo[[6, 8]].any()
    for k in (6, 8):
        store.read_frame(dataset, k, array)  # its neighbours read
    capsys.readouterr()
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 1
    assert "frame 7" in capsys.readouterr().out
    assert main_in(tmp_path, ["verify", "s.zarr", "--repair"]) == 0, capsys.readouterr().err
    after = _arrays(dataset)
    for name in ARRAYS:
        assert before[name].tobytes() == after[name].tobytes(), name
    assert main_in(tmp_path, ["verify", "s.zarr"]) == 0


def test_a_resume_redoes_whole_shards_exactly_once(dataset, tmp_path, capsys):
    """A shard whose flags say a frame is not done (a run cut short between its file and its flags): the
    run again computes that shard's frames, and every array is the same bytes as the uninterrupted run's."""
    before = _arrays(dataset)
    done = zarr.open_group(dataset, mode="r+")["tiles_done"]
    done[10] = False  # shard 3: frames 9, 10, 11
    meta = zarr.open_group(dataset, mode="r+")
    attrs = dict(meta.attrs)["bragg_dask"]
    attrs["complete"] = False
    meta.attrs["bragg_dask"] = attrs
    capsys.readouterr()
    _run(tmp_path, capsys, "s.zarr")
    out = capsys.readouterr().out
    assert "tiles computed: 3 of 40" in out, out
    after = _arrays(dataset)
    for name in ARRAYS:
        assert before[name].tobytes() == after[name].tobytes(), name


def test_training_reads_frames_of_shared_shards(dataset):
    from torch.utils.data import DataLoader

    from bragg_dask.store import read_frame
    from bragg_dask.training import StoreDataset, StoreStream, as_batch

    ds = StoreDataset(dataset)
    for k in (0, 7, 39):
        assert np.array_equal(ds[k]["image"].numpy(), read_frame(dataset, k))
    seen, firsts = [], []
    for batch in DataLoader(StoreStream(dataset, batch_size=4), batch_size=None, collate_fn=as_batch, num_workers=2):
        ks = batch["frame"].tolist()
        firsts.append(ks[0])
        assert all(k < 21 for k in ks) or all(k >= 21 for k in ks)  # a worker's block: 7 whole shards of 3
        for j, k in enumerate(ks):
            assert np.array_equal(batch["image"][j].numpy(), read_frame(dataset, k))
            seen.append(k)
    assert sorted(seen) == list(range(40)) and 21 in firsts


def test_int_and_noise_made_in_the_tile_tasks_are_the_second_passes(tmp_path, capsys, monkeypatch):
    """A dataset's int and noise images, made by the tile tasks from the frames in memory, are the bytes the
    second pass over the store makes (the executor's FinishTask, as for a single frame)."""
    import bragg_dask.executors.dask as dx

    (tmp_path / "w.json").write_text(json.dumps({"frames": 7, "seed": 2, "rotation": "uniform"}))
    run = [*BASE, "--vary", "w.json", "--zarr", "a.zarr", "-noprogress", "-seed", "5", "--tile", "16"]
    assert main_in(tmp_path, run) == 0, capsys.readouterr().err
    monkeypatch.setattr(dx, "in_task_finish", lambda *a: None)
    run[run.index("a.zarr")] = "b.zarr"
    assert main_in(tmp_path, run) == 0, capsys.readouterr().err
    a, b = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("a.zarr", "b.zarr"))
    for name in ("int", "noise", "float"):
        x = np.asarray(a[name][...])
        assert x.tobytes() == np.asarray(b[name][...]).tobytes() and np.count_nonzero(x) > 0, name
