"""A dataset store's frames as whole shard files, written and read without zarr's codec pipeline.

Part of :mod:`bragg_dask.store`.  A sharded image array (a dataset of frames of several tiles:
:func:`~bragg_dask.store.whole_frames`) holds a frame in one file: its inner chunks (the tiles),
each little-endian bytes through zstd, one after the other, then the shard's index (an
``(offset, nbytes)`` pair of little-endian uint64 per inner chunk in C order; both all ones for a
chunk that is all fill value, which is not stored) followed by the index's CRC-32C (little-endian
uint32): Zarr v3's ``sharding_indexed`` codec with its index at the end, the layout
:func:`~bragg_dask.store._init_arrays` makes (:func:`layout` says whether an array has it).  zarr
encodes a shard's chunks one after the other in its event loop; here they are compressed on the
caller's threads (``pool``), and a band of rows is read by decoding only its chunks.  This module is
the format; :class:`.chunks.OpenStore` reads and writes the files (``put_shard``, ``read_band``).  zarr
reads these files back as its own, and this module zarr's (tests/test_store_shards.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

_EMPTY = 0xFFFFFFFFFFFFFFFF


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """A sharded array's layout: ``shard`` (1, rows, cols) per file, ``inner`` (1, rows, cols) per chunk,
    the inner chunks' zstd ``level``, the dtype (little-endian) and the fill value."""

    shard: tuple[int, int, int]
    inner: tuple[int, int, int]
    level: int
    dtype: np.dtype
    fill: float

    @property
    def grid(self) -> tuple[int, int]:
        return self.shard[1] // self.inner[1], self.shard[2] // self.inner[2]


def layout(array) -> ShardLayout | None:
    """The array's :class:`ShardLayout` where its codecs are exactly those this module writes, else None."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

    meta = array.metadata
    codecs = getattr(meta, "codecs", ())
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    inner, index = sc.codecs, sc.index_codecs
    little = ("little", None)
    if (len(inner) != 2 or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], ZstdCodec)
            or inner[1].checksum or getattr(inner[0].endian, "value", inner[0].endian) not in little):
        return None
    if (len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
            or getattr(index[0].endian, "value", index[0].endian) not in little):
        return None
    if getattr(sc.index_location, "value", sc.index_location) != "end":
        return None
    shard = tuple(int(n) for n in meta.chunk_grid.chunk_shape)
    chunk = tuple(int(n) for n in sc.chunk_shape)
    if len(shard) != 3 or shard[0] != 1 or chunk[0] != 1 or shard[1] % chunk[1] or shard[2] % chunk[2]:
        return None
    return ShardLayout(shard, chunk, int(inner[1].level), np.dtype(array.dtype).newbyteorder("<"),
                       meta.fill_value)


def encode(lay: ShardLayout, image: np.ndarray, codec, pool=None) -> bytes | None:
    """One frame's shard file: ``image`` ``(rows, cols)`` (the frame; at most the shard's size) cut into
    inner chunks, each padded with the fill value and compressed by ``codec`` (zstd at the layout's
    level; on ``pool``'s threads when given); None when every chunk is all fill value (zarr then keeps
    no file)."""
    gs, gf = lay.grid
    _, cs, cf = lay.inner
    image = np.asarray(image, dtype=lay.dtype)

    def one(ij: tuple[int, int]) -> bytes | None:
        i, j = ij
        block = image[i * cs : (i + 1) * cs, j * cf : (j + 1) * cf]
        if block.size == 0 or not np.any(block != lay.fill):
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
    return b"".join([p for p in parts if p is not None] + [raw, _crc32c(raw)])


def _crc32c(data: bytes) -> bytes:
    import google_crc32c

    return int(google_crc32c.value(data)).to_bytes(4, "little")


def decode_band(lay: ShardLayout, raw: bytes | None, codec, width: int, s0: int, s1: int) -> np.ndarray:
    """Rows ``s0:s1`` (within one row of inner chunks) and columns ``0:width`` of the frame whose shard
    file holds ``raw`` (None: no file, all fill value): only their chunks decoded (native byte order)."""
    _, cs, cf = lay.inner
    gs, gf = lay.grid
    i, r0 = divmod(s0, cs)
    if s1 - s0 > cs - r0:
        raise ValueError(f"rows {s0}:{s1} cross a row of chunks of {cs}")
    band = np.full((s1 - s0, width), lay.fill, dtype=lay.dtype.newbyteorder("="))
    if raw is None:
        return band
    n = gs * gf
    index = np.frombuffer(raw[len(raw) - 4 - 16 * n : len(raw) - 4], dtype="<u8").reshape(n, 2)
    if _crc32c(raw[len(raw) - 4 - 16 * n : len(raw) - 4]) != raw[len(raw) - 4 :]:
        raise ValueError("a shard's index fails its CRC-32C")
    for j in range(-(-width // cf)):
        off, nbytes = (int(v) for v in index[i * gf + j])
        if off == _EMPTY:
            continue
        chunk = np.frombuffer(codec.decode(raw[off : off + nbytes]), dtype=lay.dtype).reshape(cs, cf)
        f0, f1 = j * cf, min((j + 1) * cf, width)
        band[:, f0:f1] = chunk[r0 : r0 + s1 - s0, : f1 - f0]
    return band
