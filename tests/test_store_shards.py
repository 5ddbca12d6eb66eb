"""A frame's shard file written and read without zarr's pipeline (``store/shards.py``,
``OpenStore.put_shard`` / ``read_band``): zarr reads ours as its own, we read zarr's, for both dtypes,
edge chunks, empty chunks and empty frames; a damaged index is refused; other layouts are left to zarr."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import zarr

from bragg_dask.store import chunks, shards

SHAPE = (3, 50, 70)  # frames, slow, fast: 4 x 5 chunks of 16, the last row and column partial


def _array(path, dtype, **extra):
    g = zarr.open_group(str(path), mode="w")
    g.create_array("img", shape=SHAPE, chunks=(1, 16, 16), shards=(1, 64, 80), dtype=dtype, fill_value=0, **extra)
    return chunks.OpenStore(str(path), "r+")


def _image(dtype, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 5000, size=SHAPE[1:]).astype(dtype)
    img[:16, :32] = 0  # two empty chunks
    img[40:, 60:] = 0  # the corner chunk, partial, empty
    return img


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("threads", [0, 2])
def test_zarr_reads_our_shards_and_we_read_zarrs(tmp_path, dtype, threads):
    g = _array(tmp_path / "s.zarr", dtype)
    assert g.sharded("img") and shards.layout(g["img"]).grid == (4, 5)
    ours, theirs = _image(dtype, 1), _image(dtype, 2)
    pool = concurrent.futures.ThreadPoolExecutor(threads) if threads else None
    try:
        synced: set = set()
        g.put_shard("img", 0, ours, synced, pool)
    finally:
        if pool is not None:
            pool.shutdown()
    assert synced  # the shard's folder, to be synced
    g["img"][2] = theirs
    z = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["img"]
    assert np.array_equal(z[0], ours)
    for frame, want in ((0, ours), (2, theirs), (1, np.zeros(SHAPE[1:], dtype))):  # frame 1: no file
        for s0 in range(0, SHAPE[1], 16):
            s1 = min(s0 + 16, SHAPE[1])
            band = g.read_band("img", frame, s0, s1)
            assert band.dtype == np.dtype(dtype) and np.array_equal(band, want[s0:s1]), (frame, s0)
    assert np.array_equal(g.read_band("img", 0, 20, 27), ours[20:27])  # part of a row of chunks


def test_an_empty_frame_leaves_no_file_and_replaces_one(tmp_path):
    g = _array(tmp_path / "s.zarr", "uint16")
    g.put_shard("img", 1, _image("uint16", 3), None)
    path = g._shard_path("img", 1)
    assert path.endswith("c/1/0/0")
    import os

    assert os.path.exists(path)
    g.put_shard("img", 1, np.zeros(SHAPE[1:], np.uint16), set())
    assert not os.path.exists(path)
    assert not np.any(zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["img"][1])


def test_a_damaged_index_is_refused(tmp_path):
    g = _array(tmp_path / "s.zarr", "uint16")
    g.put_shard("img", 0, _image("uint16", 4), None)
    path = g._shard_path("img", 0)
    raw = bytearray(open(path, "rb").read())
    raw[-10] ^= 0xFF  # inside the index
    open(path, "wb").write(bytes(raw))
    from bragg_dask.store.integrity import DamagedChunk

    with pytest.raises(DamagedChunk, match="CRC-32C"):
        g.read_band("img", 0, 0, 16)


def _checked():
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": [ZstdCodec(level=0), Crc32cCodec()]}


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_checksummed_shards_hold_every_chunk_and_zarr_reads_them(tmp_path, dtype):
    """A checksummed layout (a store of format 2): every inner chunk stored, all fill value or not, each
    with its CRC-32C; an all-zero frame is a file too; zarr reads ours and we read zarr's."""
    g = _array(tmp_path / "s.zarr", dtype, **_checked())
    lay = shards.layout(g["img"])
    assert lay is not None and lay.codec.crc
    ours = _image(dtype, 5)
    g.put_shard("img", 0, ours, None)
    g.put_shard("img", 2, np.zeros(SHAPE[1:], dtype), None)
    raw = open(g._shard_path("img", 0), "rb").read()
    index = shards.read_index(lay, raw, "f")
    assert (index[:, 0] != shards._EMPTY).all()  # the empty chunks too
    assert open(g._shard_path("img", 2), "rb")  # an empty frame: a file
    z = chunks.writable(zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")["img"])  # as the store writes
    assert np.array_equal(z[0], ours) and not np.any(z[2])
    theirs = _image(dtype, 6)
    z[1] = theirs
    assert np.array_equal(np.concatenate([g.read_band("img", 1, s, min(s + 16, 50)) for s in range(0, 50, 16)]), theirs)


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip-chunk", "flip-index", "bad-offset"])
def test_a_damaged_checksummed_shard_is_never_data(tmp_path, damage):
    from bragg_dask.store.integrity import DamagedChunk

    g = _array(tmp_path / "s.zarr", "float32", **_checked())
    lay = shards.layout(g["img"])
    g.put_shard("img", 0, _image("float32", 7), None)
    path = g._shard_path("img", 0)
    raw = bytearray(open(path, "rb").read())
    n = lay.grid[0] * lay.grid[1]
    if damage == "delete":
        import os

        os.unlink(path)
    else:
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        elif damage == "flip-chunk":
            raw[20] ^= 0x04  # inside the first inner chunk
        elif damage == "flip-index":
            raw[-30] ^= 0x04
        else:  # an index whose own checksum is right, pointing beyond the data
            import numpy as np_

            index = np_.frombuffer(bytes(raw[-4 - 16 * n : -4]), "<u8").reshape(n, 2).copy()
            index[3, 0] = len(raw) * 4
            body = index.tobytes()
            raw[-4 - 16 * n :] = body + shards.crc32c(body)
        open(path, "wb").write(bytes(raw))
    with pytest.raises(DamagedChunk) as err:
        for s in range(0, 50, 16):
            g.read_band("img", 0, s, min(s + 16, 50))
    assert err.value.file.startswith(path)


def test_other_layouts_are_zarrs(tmp_path):
    from zarr.codecs import BloscCodec

    g = _array(tmp_path / "s.zarr", "uint16", compressors=[BloscCodec()])
    assert not g.sharded("img") and shards.layout(g["img"]) is None
    g2 = zarr.open_group(str(tmp_path / "t.zarr"), mode="w")
    g2.create_array("img", shape=SHAPE, chunks=(1, 16, 16), dtype="uint16", fill_value=0)
    assert shards.layout(g2["img"]) is None  # chunks, not shards: put_chunk's files


def test_a_dataset_store_uses_them(tmp_path):
    """A dataset of frames of several tiles (a shard per frame): its float frames are written as shard
    files here, and zarr reads them."""
    from bragg_dask import store

    from .test_noisify_store import SIM, run_cli

    p = run_cli(SIM + ["-nonoise", "--frames", "2", "--zarr", "d.zarr"], tmp_path)
    assert p.returncode == 0, p.stderr
    g = chunks.opened(str(tmp_path / "d.zarr"), "r")
    assert store.whole_frames(g) and g.sharded(store.FLOAT)
    z = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")[store.FLOAT]
    for k in range(2):
        whole = np.concatenate([g.read_band(store.FLOAT, k, s, min(s + 16, 48)) for s in range(0, 48, 16)])
        assert np.array_equal(whole, z[k]) and np.count_nonzero(whole) > 100


# ---- several frames a shard ------------------------------------------------------------------------------
MANY = (10, 50, 70)  # frames in shards of 4: the last shard holds two


def _many(path, dtype="float32", checked=True):
    g = zarr.open_group(str(path), mode="w")
    extra = _checked() if checked else {}
    g.create_array("img", shape=MANY, chunks=(1, 16, 16), shards=(4, 64, 80), dtype=dtype, fill_value=0, **extra)
    return chunks.OpenStore(str(path), "r+")


def _frames(dtype, seed, n=MANY[0]):
    return [_image(dtype, seed + k) for k in range(n)]


def _read_all(g, k):
    out = np.empty(MANY[1:], np.float32)
    return g.read_shard("img", k, out)


@pytest.mark.parametrize("checked", [True, False])
def test_shards_of_several_frames_are_zarrs_and_read_a_frame_alone(tmp_path, checked):
    """Shards of 4 frames (the last of 2): zarr reads ours, we read zarr's; a frame is read from its shard
    without the others (its index, then its own chunks); a band of rows too."""
    g = _many(tmp_path / "m.zarr", checked=checked)
    lay = shards.layout(g["img"])
    assert lay is not None and lay.frames == 4 and g.shard_frames("img") == 4
    ours = _frames("float32", 10)
    for first in (0, 4, 8):
        g.put_shard("img", first, ours[first : first + 4], set())
    assert g._shard_path("img", 9).endswith("c/2/0/0")
    z = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")["img"]
    assert np.array_equal(z[...], np.stack(ours))
    for k in range(10):
        assert np.array_equal(_read_all(g, k), ours[k]), k
        assert np.array_equal(g.read_band("img", k, 16, 32), ours[k][16:32])
    theirs = _frames("float32", 40)
    chunks.writable(zarr.open_group(str(tmp_path / "m.zarr"), mode="r+")["img"])[...] = np.stack(theirs)
    for k in range(10):
        assert np.array_equal(_read_all(g, k), theirs[k]), k


def test_a_shard_is_written_whole_or_spliced(tmp_path):
    """put_shard refuses part of a shard; put_frames writes a frame into its shard keeping the others'
    chunks byte for byte (from several threads at once, none lost); a frame removed leaves the others."""
    from bragg_dask.store.integrity import DamagedChunk

    g = _many(tmp_path / "m.zarr")
    frames = _frames("float32", 50)
    with pytest.raises(ValueError, match="whole shard"):
        g.put_shard("img", 0, frames[:3], None)
    with pytest.raises(ValueError, match="whole shard"):
        g.put_shard("img", 2, frames[2:6], None)
    g.put_frames("img", {1: frames[1]}, set())  # a new shard with one frame: the others not stored
    assert np.array_equal(_read_all(g, 1), frames[1])
    with pytest.raises(DamagedChunk, match="missing from its shard"):
        _read_all(g, 0)
    assert not np.any(zarr.open_group(str(tmp_path / "m.zarr"), mode="r")["img"][0])  # zarr: fill value

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: g.put_frames("img", {k: frames[k]}, set()), [0, 2, 3, 8, 9]))
    for k in (0, 1, 2, 3, 8, 9):
        assert np.array_equal(_read_all(g, k), frames[k]), k
    before = open(g._shard_path("img", 0), "rb").read()
    lay = shards.layout(g["img"])
    kept = shards.split(lay, before, "f")
    new = _image("float32", 99)
    g.put_frames("img", {2: new}, None)
    after = shards.split(lay, open(g._shard_path("img", 0), "rb").read(), "f")
    assert [bytes(c) for k in (0, 1, 3) for c in kept[k]] == [bytes(c) for k in (0, 1, 3) for c in after[k]]
    assert np.array_equal(_read_all(g, 2), new)
    from bragg_dask.store.writing import drop_frame_images

    drop_frame_images(str(tmp_path / "m.zarr"), "img", [1, 8, 9])  # frame 1 from its shard; shard 2 whole
    import os

    assert not os.path.exists(g._shard_path("img", 8)) and os.path.exists(g._shard_path("img", 0))
    with pytest.raises(DamagedChunk, match="missing from its shard"):
        _read_all(g, 1)
    assert np.array_equal(_read_all(g, 3), frames[3])


def test_a_damaged_shard_of_several_frames(tmp_path):
    """One frame's chunk flipped: that frame damaged, its neighbours read; the index flipped: every frame of
    the shard refused, and no frame spliced into it (the others' chunks cannot be kept)."""
    from bragg_dask.store.integrity import DamagedChunk

    g = _many(tmp_path / "m.zarr")
    frames = _frames("float32", 70)
    g.put_shard("img", 0, frames[:4], None)
    lay = shards.layout(g["img"])
    path = g._shard_path("img", 0)
    raw = bytearray(open(path, "rb").read())
    index = shards.read_index(lay, bytes(raw), "f")
    off = int(index[2 * lay.per_frame + 3, 0])  # frame 2's fourth chunk
    raw[off + 8] ^= 0x10
    open(path, "wb").write(bytes(raw))
    with pytest.raises(DamagedChunk):
        _read_all(g, 2)
    for k in (0, 1, 3):
        assert np.array_equal(_read_all(g, k), frames[k])
    g.put_frames("img", {2: frames[2]}, None)  # the repair of frame 2: its chunks replaced
    assert np.array_equal(_read_all(g, 2), frames[2])
    raw = bytearray(open(path, "rb").read())
    raw[-9] ^= 0x01
    open(path, "wb").write(bytes(raw))
    for k in range(4):
        with pytest.raises(DamagedChunk, match="CRC-32C"):
            _read_all(g, k)
    with pytest.raises(DamagedChunk, match="CRC-32C"):
        g.put_frames("img", {1: frames[1]}, None)
    assert open(path, "rb").read() == bytes(raw)  # left as it was
