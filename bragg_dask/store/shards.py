"""A dataset store's frames as whole shard files, written and read without zarr's codec pipeline.

Part of :mod:`bragg_dask.store`.  A sharded image array (a dataset of frames of several tiles:
:func:`~bragg_dask.store.whole_frames`) holds a frame in one file: its inner chunks (the tiles),
each little-endian bytes through zstd (and, in stores of format 2, the CRC-32C of those bytes), one
after the other, then the shard's index (an ``(offset, nbytes)`` pair of little-endian uint64 per
inner chunk in C order; both all ones for a chunk not stored: in an older store, one all fill value;
a checksummed shard stores every chunk) followed by the index's CRC-32C (little-endian uint32): Zarr
v3's ``sharding_indexed`` codec with its index at the end, the layout
:func:`~bragg_dask.store._init_arrays` makes (:func:`layout` says whether an array has it).  zarr
encodes a shard's chunks one after the other in its event loop; here they are compressed on the
caller's threads (``pool``), and a band of rows is read by decoding only its chunks.  This module is
the format; :class:`.chunks.OpenStore` reads and writes the files (``put_shard``, ``read_band``).  zarr
reads these files back as its own, and this module zarr's (tests/test_store_shards.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from bragg_dask.store.codec import ChunkCodec, codec_of, crc32c
from bragg_dask.store.integrity import DamagedChunk

_EMPTY = 0xFFFFFFFFFFFFFFFF


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """A sharded array's layout: ``shard`` (1, rows, cols) per file, ``inner`` (1, rows, cols) per chunk,
    the inner chunks' ``codec`` (zstd, and a CRC-32C where checksummed), the dtype (little-endian) and
    the fill value."""

    shard: tuple[int, int, int]
    inner: tuple[int, int, int]
    codec: ChunkCodec
    dtype: np.dtype
    fill: float

    @property
    def grid(self) -> tuple[int, int]:
        return self.shard[1] // self.inner[1], self.shard[2] // self.inner[2]


def layout(array) -> ShardLayout | None:
    """The array's :class:`ShardLayout` where its codecs are exactly those this module writes, else None."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

    meta = array.metadata
    codecs: Sequence[Any] = getattr(meta, "codecs", ())  # none: a Zarr v2 array's metadata
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    inner, index = sc.codecs, sc.index_codecs
    little = ("little", None)
    codec = codec_of(inner, (BytesCodec, ZstdCodec, Crc32cCodec))
    if codec is None:
        return None
    if (
        len(index) != 2
        or not isinstance(index[0], BytesCodec)
        or not isinstance(index[1], Crc32cCodec)
        or getattr(index[0].endian, "value", index[0].endian) not in little
    ):
        return None
    if getattr(sc.index_location, "value", sc.index_location) != "end":
        return None
    shard = tuple(int(n) for n in meta.chunk_grid.chunk_shape)
    chunk = tuple(int(n) for n in sc.chunk_shape)
    if (
        len(shard) != 3
        or len(chunk) != 3
        or shard[0] != 1
        or chunk[0] != 1
        or shard[1] % chunk[1]
        or shard[2] % chunk[2]
    ):
        return None
    return ShardLayout(shard, chunk, codec, np.dtype(array.dtype).newbyteorder("<"), meta.fill_value)


def encode(lay: ShardLayout, image: np.ndarray, codec: ChunkCodec, pool=None) -> bytes | None:
    """One frame's shard file: ``image`` ``(rows, cols)`` (the frame; at most the shard's size) cut into
    inner chunks, each padded with the fill value and encoded by ``codec`` (the layout's; on ``pool``'s
    threads when given).  A checksummed layout stores every chunk; another leaves out the chunks all of
    fill value, and gives None when every chunk is (zarr then keeps no file)."""
    gs, gf = lay.grid
    _, cs, cf = lay.inner
    image = np.asarray(image, dtype=lay.dtype)

    def one(ij: tuple[int, int]) -> bytes | None:
        i, j = ij
        block = image[i * cs : (i + 1) * cs, j * cf : (j + 1) * cf]
        if not codec.crc and (block.size == 0 or not np.any(block != lay.fill)):
            return None
        full = np.full((cs, cf), lay.fill, dtype=lay.dtype)
        full[: block.shape[0], : block.shape[1]] = block
        return codec.encode(full)

    cells = [(i, j) for i in range(gs) for j in range(gf)]
    parts = list(pool.map(one, cells)) if pool is not None else [one(c) for c in cells]
    if all(p is None for p in parts):
        return None
    index = np.full((len(parts), 2), _EMPTY, dtype="<u8")
    offset = 0
    for k, p in enumerate(parts):
        if p is not None:
            index[k] = offset, len(p)
            offset += len(p)
    raw = index.tobytes()
    return b"".join([p for p in parts if p is not None] + [raw, crc32c(raw)])


def read_index(lay: ShardLayout, raw: bytes, file: str) -> np.ndarray:
    """The shard's index, ``(chunks, 2)`` (offset, nbytes), checked: its CRC-32C, and every stored chunk
    within the file's data (:class:`DamagedChunk` naming ``file`` otherwise)."""
    n = lay.grid[0] * lay.grid[1]
    size = 16 * n + 4
    if len(raw) < size:
        raise DamagedChunk(file, f"truncated: {len(raw)} bytes, less than its index of {size}")
    body = raw[len(raw) - size : len(raw) - 4]
    if crc32c(body) != raw[len(raw) - 4 :]:
        raise DamagedChunk(file, "its shard index fails its CRC-32C checksum (changed or truncated)")
    index = np.frombuffer(body, dtype="<u8").reshape(n, 2)
    data = len(raw) - size
    for k, (off, nbytes) in enumerate(index.tolist()):
        if off == _EMPTY and nbytes == _EMPTY:
            continue
        if off == _EMPTY or nbytes == _EMPTY or off + nbytes > data:
            raise DamagedChunk(
                file,
                f"its shard index places inner chunk {k} at bytes {off}+{nbytes}, beyond the {data} bytes of chunks",
            )
    return index


def inner_chunk(lay: ShardLayout, raw: bytes | np.ndarray, index: np.ndarray, k: int, file: str) -> np.ndarray | None:
    """Inner chunk ``k`` (C order) of the shard ``raw`` (its bytes, or a uint8 array of them: the chunk read
    without a copy), ``(rows, cols)`` little-endian, checked; None where it is not stored (an older store's
    chunk all of fill value; damage in a checksummed one)."""
    off, nbytes = (int(v) for v in index[k])
    _, cs, cf = lay.inner
    where = f"{file} (inner chunk {divmod(k, lay.grid[1])})"
    if off == _EMPTY:
        if lay.codec.crc:
            raise DamagedChunk(where, "missing from its shard")
        return None
    data = np.frombuffer(lay.codec.decode(raw[off : off + nbytes], where), dtype=lay.dtype)
    if data.size != cs * cf:
        raise DamagedChunk(where, f"holds {data.size} values, not {cs * cf}")
    return data.reshape(cs, cf)


def decode_band(lay: ShardLayout, raw: bytes | None, width: int, s0: int, s1: int, file: str = "shard") -> np.ndarray:
    """Rows ``s0:s1`` (within one row of inner chunks) and columns ``0:width`` of the frame whose shard
    file ``file`` holds ``raw`` (None: no file, all fill value): only their chunks decoded and checked
    (native byte order)."""
    _, cs, cf = lay.inner
    gs, gf = lay.grid
    i, r0 = divmod(s0, cs)
    if s1 - s0 > cs - r0:
        raise ValueError(f"rows {s0}:{s1} cross a row of chunks of {cs}")
    band = np.full((s1 - s0, width), lay.fill, dtype=lay.dtype.newbyteorder("="))
    if raw is None:
        return band
    index = read_index(lay, raw, file)
    view = np.frombuffer(raw, dtype=np.uint8)
    for j in range(-(-width // cf)):
        chunk = inner_chunk(lay, view, index, i * gf + j, file)
        if chunk is None:
            continue
        f0, f1 = j * cf, min((j + 1) * cf, width)
        band[:, f0:f1] = chunk[r0 : r0 + s1 - s0, : f1 - f0]
    return band


def decode_frame(lay: ShardLayout, raw: bytes | None, out: np.ndarray, file: str = "shard") -> np.ndarray:
    """The whole frame whose shard file ``file`` holds ``raw`` (None: no file, all fill value) into ``out``
    ``(rows, cols)`` (any dtype the values fit; at most the shard's size): the file read once, its index
    checked once, every inner chunk decoded and checked without a copy of its bytes."""
    _, cs, cf = lay.inner
    gs, gf = lay.grid
    rows, cols = out.shape
    if raw is None:
        out[...] = lay.fill
        return out
    index = read_index(lay, raw, file)
    view = np.frombuffer(raw, dtype=np.uint8)
    for i in range(-(-rows // cs)):
        for j in range(-(-cols // cf)):
            chunk = inner_chunk(lay, view, index, i * gf + j, file)
            s0, f0 = i * cs, j * cf
            s1, f1 = min(s0 + cs, rows), min(f0 + cf, cols)
            out[s0:s1, f0:f1] = lay.fill if chunk is None else chunk[: s1 - s0, : f1 - f0]
    return out
