"""The training reader's fast paths: a dataset's frame decoded from its shard file in one read, straight into
the caller's array; a frame's rows of the reflection table from the table's chunk files; both checked, a
damaged file one line naming it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bragg_dask.errors import ConfigError

from .conftest import main_in

BASE = "-cell 50 60 70 90 90 90 -default_F 100 -distance 100 -detpixels 40 -oversample 1".split()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A store of 4 frames of 40 x 40 in tiles of 16 (each frame one shard file of 3 x 3 inner chunks, the
    last row and column padded), its reflection table in chunks of 5 rows (a frame's rows span several)."""
    import bragg_dask.store.writing as writing

    tmp = tmp_path_factory.mktemp("read")
    (tmp / "v.json").write_text(json.dumps({"frames": 4, "seed": 5, "rotation": "uniform", "N": {"integers": [3, 6]}}))
    old, writing.REFLECTION_CHUNK = writing.REFLECTION_CHUNK, 5
    try:
        rc = main_in(tmp, [*BASE, "--vary", "v.json", "--zarr", "s.zarr", "--tile", "16", "-noprogress"])
    finally:
        writing.REFLECTION_CHUNK = old
    assert rc == 0
    return str(tmp / "s.zarr")


def test_a_frame_read_whole_is_its_bands(dataset):
    from bragg_dask.store import StoreFrame, opened, read_frame

    g = opened(dataset, "r")
    assert g.sharded("float") and g["refl_hkl"].chunks[0] == 5
    for k in range(4):
        for array in ("float", "int"):
            bands = np.concatenate([b for _, _, b in StoreFrame(dataset, k).bands(array)])
            whole = read_frame(dataset, k, array)
            assert whole.dtype == bands.dtype and np.array_equal(whole, bands)
            out = np.full((40, 40), -1.0, dtype=np.float32)
            assert read_frame(dataset, k, array, out=out) is out and np.array_equal(out, bands.astype(np.float32))
    with pytest.raises(ValueError, match="not the frame's"):
        read_frame(dataset, 0, out=np.empty((40, 41), dtype=np.float32))


def test_a_frames_rows_of_the_table_span_its_chunks(dataset):
    import zarr

    from bragg_dask.store import frame_labels
    from bragg_dask.store.labels import REFLECTION_FIELDS

    g = zarr.open_group(dataset, mode="r")
    off = np.asarray(g["refl_offset"])
    assert off[-1] > 10 and any((off[k] // 5) != ((off[k + 1] - 1) // 5) for k in range(4))  # rows over chunks
    for k in range(4):
        rows = frame_labels(dataset, k)["reflections"]
        for name, field in REFLECTION_FIELDS.items():
            want = np.asarray(g[name])[off[k] : off[k + 1]]
            assert rows[field].dtype == want.dtype and np.array_equal(rows[field], want), (k, name)


def _damaged_copy(src: str, dst: str, rel: str, at: int) -> str:
    import shutil

    shutil.copytree(src, dst)
    file = os.path.join(dst, rel)
    data = bytearray(open(file, "rb").read())
    data[at] ^= 0xFF
    with open(file, "wb") as fh:
        fh.write(bytes(data))
    return file


def test_a_damaged_shard_or_table_chunk_is_one_line(dataset, tmp_path):
    from bragg_dask.store import frame_labels, read_frame
    from bragg_dask.training import StoreDataset

    bad = str(tmp_path / "shard.zarr")
    file = _damaged_copy(dataset, bad, "float/c/2/0/0", 40)  # a byte of its first inner chunk
    with pytest.raises(ConfigError, match=r"frame 2: .*float/c/2/0/0 \(inner chunk \(0, 0\)\): fails its CRC-32C"):
        read_frame(bad, 2, out=np.empty((40, 40), dtype=np.float32))
    with pytest.raises(ConfigError, match="frame 2"):
        StoreDataset(bad)[2]
    assert np.array_equal(read_frame(bad, 1), read_frame(dataset, 1)) and os.path.exists(file)
    bad = str(tmp_path / "table.zarr")
    _damaged_copy(dataset, bad, "refl_hkl/c/0/0", 10)
    with pytest.raises(ConfigError, match=r"frame 0: .*refl_hkl/c/0/0: fails its CRC-32C"):
        frame_labels(bad, 0)


def test_the_table_streams_a_chunk_at_a_time(tmp_path, monkeypatch):
    """ReflectionWriter: tables of any lengths (none too) in frame order; the arrays are their rows, the
    index their edges; no more than a chunk's rows held between writes; the index written last."""
    import zarr

    import bragg_dask.store.writing as writing
    from bragg_dask.store import ReflectionWriter

    zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    monkeypatch.setattr(writing, "REFLECTION_CHUNK", 7)
    rng = np.random.default_rng(3)
    tables = []
    for _ in range(23):
        n = int(rng.integers(0, 12))
        tables.append({"hkl": rng.integers(-9, 9, (n, 3)), "panel": np.zeros(n), "xy_px": rng.random((n, 2)),
                       "d_A": rng.random(n), "F": rng.random(n), "photons": rng.random(n),
                       "active": rng.random(n) > 0.5})  # fmt: skip
    w = ReflectionWriter(str(tmp_path / "s.zarr"))
    for t in tables:
        w.add(t)
        assert w.offset[-1] - w.rows < 7 + 12  # (what is held: less than a chunk, and the frame just added)
        assert w.rows % 7 == 0
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert "refl_offset" not in g
    w.close()
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    off = np.asarray(g["refl_offset"])
    assert off.tolist() == np.concatenate([[0], np.cumsum([len(t["hkl"]) for t in tables])]).tolist()
    assert np.array_equal(np.asarray(g["refl_hkl"]), np.concatenate([t["hkl"] for t in tables]))
    assert np.array_equal(np.asarray(g["refl_photons"]), np.concatenate([t["photons"] for t in tables]))
    assert g["refl_hkl"].chunks == (7, 3)


def test_the_label_pass_holds_a_window_of_frames(tmp_path, capsys):
    """label_pass with a window of 2: every frame's table, in frame order, the same as the whole pass's."""
    import zarr
    from distributed import Client

    import bragg_dask.executors.labels as labels
    from bragg_dask import simulation_from_args
    from bragg_dask.planning.frames import DatasetSpec, make_frames
    from bragg_dask.planning.vary import variation_of

    doc = {"frames": 5, "seed": 8, "rotation": "uniform", "N": {"integers": [3, 6]}}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "s.zarr", "-noprogress"]) == 0
    store = str(tmp_path / "s.zarr")
    before = {n: np.asarray(zarr.open_group(store, mode="r")[n]) for n in ("refl_hkl", "refl_offset", "refl_xy_px")}
    sim = simulation_from_args(BASE)
    frames = make_frames(sim, DatasetSpec("vary", 5, variation=variation_of(doc)))
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        for window in (1, 2):
            labels.label_pass(client, client.scatter(sim), frames, store, f"t{window}", "cpu", window=window)
            g = zarr.open_group(store, mode="r")
            for name, want in before.items():
                assert np.array_equal(np.asarray(g[name]), want), (window, name)


def test_tile_tasks_stage_the_tables_the_label_pass_would_make(tmp_path, capsys, monkeypatch):
    """A tile task holding whole frames makes their tables from the images in memory, staged for the label
    pass: the same bytes as the label pass's own; a staged file cut short is made again; none left after."""
    import os

    import zarr

    import bragg_dask.executors.labels as labels

    doc = {"frames": 4, "seed": 6, "rotation": "uniform", "N": {"integers": [3, 6]}}
    (tmp_path / "v.json").write_text(json.dumps(doc))
    staged, real = [], labels.stage_tables
    monkeypatch.setattr(labels, "stage_tables", lambda sim, frames, *a: staged.extend(frames) or real(sim, frames, *a))
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "a.zarr", "-noprogress", "--tile", "20"]) == 0
    assert sorted(staged) == [0, 1, 2, 3] and not os.path.exists(tmp_path / "a.zarr" / labels.STAGED)
    monkeypatch.setattr(labels, "stage_tables", lambda *a: None)  # every table by the label pass
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "b.zarr", "-noprogress", "--tile", "20"]) == 0
    a, b = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("a.zarr", "b.zarr"))
    names = [n for n in a.array_keys() if n.startswith("refl_")]
    assert len(names) == 8
    for name in names:
        assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name
    # a run cut short in its label pass: a staged file half written, no index; the run again completes it
    monkeypatch.setattr(labels, "stage_tables", real)
    os.makedirs(tmp_path / "b.zarr" / labels.STAGED)
    (tmp_path / "b.zarr" / labels.STAGED / "2.npz").write_bytes(b"PK\x03\x04 cut")
    del zarr.open_group(str(tmp_path / "b.zarr"), mode="r+")["refl_offset"]
    assert main_in(tmp_path, [*BASE, "--vary", "v.json", "--zarr", "b.zarr", "-noprogress", "--tile", "20"]) == 0
    capsys.readouterr()
    b = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    for name in names:
        assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name
    assert not os.path.exists(tmp_path / "b.zarr" / labels.STAGED)


def test_a_stream_of_batches_reads_each_frame_once(dataset):
    """StoreStream(batch_size=B): batches as collate makes them, each frame decoded into the batch's tensor,
    every frame once over a DataLoader's workers; in-process too; a bad batch size refused."""
    from torch.utils.data import DataLoader

    from bragg_dask.store import frame_labels, read_frame
    from bragg_dask.training import StoreStream, as_batch

    seen = []
    stream = StoreStream(dataset, batch_size=3, transform=lambda b: {**b, "seen": len(b["frame"])})
    for batch in DataLoader(stream, batch_size=None, num_workers=2, collate_fn=as_batch):
        assert batch["image"].shape[1:] == (40, 40) and batch["seen"] == len(batch["frame"]) <= 3
        for j, k in enumerate(batch["frame"].tolist()):
            assert np.array_equal(batch["image"][j].numpy(), read_frame(dataset, k))
            want = frame_labels(dataset, k)
            assert np.array_equal(batch["reflections"][j]["hkl"], want["reflections"]["hkl"])
            assert batch["vary"][j].keys() == want["vary"].keys() and np.array_equal(
                batch["vary"][j]["N"], want["vary"]["N"]
            )
            assert np.array_equal(batch["orientation"][j], want["orientation"])
            seen.append(k)
    assert sorted(seen) == [0, 1, 2, 3]
    alone = list(StoreStream(dataset, labels=False, batch_size=4))
    assert len(alone) == 1 and alone[0]["frame"].tolist() == [0, 1, 2, 3] and set(alone[0]) == {"frame", "image"}
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            StoreStream(dataset, batch_size=bad)
