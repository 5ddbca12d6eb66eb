"""Chunks written straight to their files (store.OpenStore.put_chunk) read back through zarr as written."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

from bragg_dask import store as zstore


def _store(tmp_path, **codec):
    path = str(tmp_path / "s.zarr")
    g = zarr.open_group(path, mode="a", zarr_format=3)
    g.create_array("img", shape=(2, 10, 7), chunks=(1, 4, 4), dtype="float32", fill_value=0.0, **codec)
    g.create_array("flag", shape=(2, 3, 2), chunks=(1, 1, 1), dtype="bool", fill_value=False, **codec)
    g.create_array("stat", shape=(2, 3, 2, 5), chunks=(1, 1, 1, 5), dtype="float64", fill_value=0.0, **codec)
    g.create_array("count", shape=(2, 10, 7), chunks=(1, 4, 4), dtype="uint16", fill_value=0, **codec)
    return path


def _checked():
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": [ZstdCodec(level=0), Crc32cCodec()]}


@pytest.mark.parametrize("checked", [False, True], ids=["zstd", "zstd+crc32c"])
def test_direct_chunks_read_back_through_zarr(tmp_path, checked):
    path = _store(tmp_path, **(_checked() if checked else {}))
    g = zstore.opened(path)
    assert all(g.direct(n) for n in ("img", "flag", "stat", "count"))
    rng = np.random.default_rng(3)
    want = np.zeros((2, 10, 7), np.float32)
    counts = np.zeros((2, 10, 7), np.uint16)
    synced: set = set()
    for f in range(2):
        for i, s0 in enumerate(range(0, 10, 4)):
            for j, f0 in enumerate(range(0, 7, 4)):
                block = rng.random((min(4, 10 - s0), min(4, 7 - f0))).astype(np.float32)  # edges: smaller
                want[f, s0 : s0 + 4, f0 : f0 + 4] = block
                g.put_chunk("img", (f, i, j), block, synced)
                c = (block * 1000).astype(np.uint16)
                counts[f, s0 : s0 + 4, f0 : f0 + 4] = c
                g.put_chunk("count", (f, i, j), c, None)
                g.put_chunk("stat", (f, i, j, 0), np.arange(5.0)[None, None, None, :] + f, synced)
                g.put_chunk("flag", (f, i, j), np.ones((1, 1, 1), bool), synced)
    g.sync_folders(synced)
    assert not synced
    r = zarr.open_group(path, mode="r")
    assert np.array_equal(np.asarray(r["img"][...]), want)
    assert np.array_equal(np.asarray(r["count"][...]), counts)
    assert np.asarray(r["flag"][...]).all()
    assert np.array_equal(np.asarray(r["stat"][1, 2, 1]), np.arange(5.0) + 1)
    assert not [p for p in os.listdir(os.path.join(path, "img", "c", "0", "0")) if p.endswith(".partial")]


@pytest.mark.parametrize("checked", [False, True], ids=["zstd", "zstd+crc32c"])
def test_a_chunk_of_fill_values_is_a_file_too(tmp_path, checked):
    """A done tile always has its file (a missing one is damage), all zeros or not."""
    path = _store(tmp_path, **(_checked() if checked else {}))
    g = zstore.opened(path)
    f = os.path.join(path, "img", "c", "0", "1", "1")
    g.put_chunk("img", (0, 1, 1), np.zeros((4, 3), np.float32), None)
    assert os.path.exists(f)
    assert not np.asarray(zarr.open_group(path, mode="r")["img"][0, 4:8, 4:7]).any()
    assert not g.get_chunk("img", (0, 1, 1)).any()


def _flip(file, at):
    raw = bytearray(open(file, "rb").read())
    raw[at] ^= 0x01
    open(file, "wb").write(bytes(raw))


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip-data", "flip-crc", "empty"])
def test_a_damaged_checksummed_chunk_is_never_data(tmp_path, damage):
    """Every way a chunk file can be damaged raises DamagedChunk naming the file, from our reader; zarr's
    own reader refuses the checksum too (the store's files are zarr's format)."""
    from bragg_dask.store.integrity import DamagedChunk

    path = _store(tmp_path, **_checked())
    g = zstore.opened(path)
    block = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    g.put_chunk("img", (1, 0, 1), block, None)
    f = g.chunk_file("img", (1, 0, 1))
    assert np.array_equal(g.get_chunk("img", (1, 0, 1))[0], block)
    if damage == "delete":
        os.unlink(f)
    elif damage == "truncate":
        os.truncate(f, os.path.getsize(f) - 7)
    elif damage == "empty":
        os.truncate(f, 0)
    else:
        _flip(f, 12 if damage == "flip-data" else -2)
    with pytest.raises(DamagedChunk) as err:
        g.get_chunk("img", (1, 0, 1))
    assert err.value.file == f and err.value.why
    if damage != "delete":
        with pytest.raises((ValueError, RuntimeError)):  # zarr's checksum, or its decoder
            zarr.open_group(path, mode="r")["img"][1, 0:4, 4:7]


def test_an_unchecked_chunk_that_does_not_decode_is_never_data(tmp_path):
    """A store made before checksums (format 1): a truncated chunk is still found (zstd cannot decode it),
    and a missing one is the fill value, as it was written."""
    from bragg_dask.store.integrity import DamagedChunk

    path = _store(tmp_path)
    g = zstore.opened(path)
    g.put_chunk("img", (0, 0, 0), np.random.default_rng(2).random((4, 4)).astype(np.float32), None)
    f = g.chunk_file("img", (0, 0, 0))
    os.truncate(f, os.path.getsize(f) // 2)
    with pytest.raises(DamagedChunk, match="zstd"):
        g.get_chunk("img", (0, 0, 0))
    assert not g.get_chunk("img", (1, 2, 1)).any()


def test_a_block_larger_than_its_chunk_is_refused(tmp_path):
    g = zstore.opened(_store(tmp_path))
    with pytest.raises(ValueError, match="is not chunk"):
        g.put_chunk("img", (0, 0, 0), np.ones((5, 4), np.float32), None)


def test_other_codecs_are_written_by_zarr(tmp_path):
    from zarr.codecs import BytesCodec, GzipCodec

    path = _store(tmp_path, compressors=GzipCodec(level=1), serializer=BytesCodec())
    g = zstore.opened(path)
    assert not g.direct("img")
    from bragg_dask.planning.plan import TileSpec

    zstore.write_tile_image(g, "img", 1, TileSpec(4, 8, 4, 7, (1, 1)), np.full((4, 3), 2.0, np.float32))
    assert np.asarray(zarr.open_group(path, mode="r")["img"][1, 4:8, 4:7]).min() == 2.0


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    g = zstore.opened(_store(tmp_path))

    def full_disk(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        g.put_chunk("img", (0, 0, 0), np.ones((4, 4), np.float32), set())
    monkeypatch.undo()
    folder = os.path.join(str(tmp_path / "s.zarr"), "img", "c", "0", "0")
    assert not os.path.isdir(folder) or not os.listdir(folder)


def test_a_block_that_is_not_its_chunk_is_refused(tmp_path):
    g = zstore.opened(_store(tmp_path))
    with pytest.raises(ValueError, match="is not chunk"):  # smaller, but not at the array's far edge
        g.put_chunk("img", (0, 0, 0), np.ones((3, 4), np.float32), None)
    g.put_chunk("img", (0, 2, 1), np.ones((2, 3), np.float32), None)  # the far corner: 10 = 2*4 + 2, 7 = 4 + 3
    from bragg_dask.planning.plan import TileSpec

    assert g.aligned("img", TileSpec(8, 10, 4, 7, (2, 1)))
    assert not g.aligned("img", TileSpec(7, 10, 4, 7, (2, 1)))


def test_an_opened_store_keeps_its_folder_when_the_working_folder_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _store(tmp_path)
    g = zstore.opened("s.zarr")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    g.put_chunk("img", (1, 0, 0), np.ones((4, 4), np.float32), None)
    assert os.path.exists(tmp_path / "s.zarr" / "img" / "c" / "1" / "0" / "0")
    assert not (other / "s.zarr").exists()


@pytest.mark.parametrize("codec", [{}, {"compressors": None}])
def test_chunks_and_bands_read_straight_equal_zarr(tmp_path, codec):
    """get_chunk / read_band / read_tile_image (straight from the files, or through zarr for another
    codec) give what zarr reads, missing chunks as the fill value included."""
    from bragg_dask.planning.plan import TileSpec

    path = _store(tmp_path, **codec)
    rng = np.random.default_rng(5)
    w = zarr.open_group(path, mode="r+")
    want = rng.random((2, 10, 7)).astype(np.float32)
    want[1, 4:8, 4:7] = 0.0  # a chunk of fill values: no file
    w["img"][...] = want
    g = zstore.opened(path, "r")
    assert g.direct("img") == (codec == {})
    if g.direct("img"):
        assert np.array_equal(g.get_chunk("img", (1, 1, 1)), np.zeros((1, 4, 4), np.float32))
        assert np.array_equal(g.get_chunk("img", (0, 2, 1))[0, :2, :3], want[0, 8:10, 4:7])
    for f in range(2):
        for s0, s1 in ((0, 4), (4, 8), (8, 10), (5, 7)):
            band = g.read_band("img", f, s0, s1)
            assert band.shape == (s1 - s0, 7) and band.dtype == np.float32
            assert np.array_equal(band, want[f, s0:s1])
        tile = TileSpec(index=(2, 1), s0=8, s1=10, f0=4, f1=7)
        assert np.array_equal(zstore.read_tile_image(g, "img", f, tile), want[f, 8:10, 4:7])
    if g.direct("img"):
        with pytest.raises(ValueError, match="cross a row of chunks"):
            g.read_band("img", 0, 2, 6)


def test_a_chunk_file_of_the_wrong_size_is_refused(tmp_path):
    path = _store(tmp_path)
    g = zstore.opened(path)
    g.put_chunk("img", (0, 0, 0), np.ones((4, 4), np.float32), None)
    g.put_chunk("stat", (0, 0, 0, 0), np.ones((1, 1, 1, 5)), None)  # 5 float64: 10 float32
    os.replace(os.path.join(path, "stat", "c", "0", "0", "0", "0"), os.path.join(path, "img", "c", "0", "0", "0"))
    from bragg_dask.store.integrity import DamagedChunk

    with pytest.raises(DamagedChunk, match="holds 10 values"):
        g.get_chunk("img", (0, 0, 0))
