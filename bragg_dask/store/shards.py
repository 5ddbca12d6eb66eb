"""A dataset store's frames as shard files, written and read without zarr's codec pipeline.

Part of :mod:`bragg_dask.store`.  A sharded image array (a dataset's: :func:`~bragg_dask.store.whole_frames`)
holds ``G`` consecutive frames in one file (``G``: the shard's first dimension, 1 for large frames, more
for small ones, so that a dataset of many small frames is few files): their inner chunks (each frame's
tiles), each little-endian bytes through zstd (and, in stores of format 2, the CRC-32C of those bytes),
one after the other, a frame's together, then the shard's index (an ``(offset, nbytes)`` pair of
little-endian uint64 per inner chunk in C order: frame, then tile row, then tile column; both all ones
for a chunk not stored: a frame not written, or in an older store a chunk all of fill value) followed by
the index's CRC-32C (little-endian uint32): Zarr v3's ``sharding_indexed`` codec with its index at the
end, the layout
:func:`~bragg_dask.store._init_arrays` makes (:func:`layout` says whether an array has it).  zarr
encodes a shard's chunks one after the other in its event loop; here they are compressed on the
caller's threads (``pool``), and a band of rows is read by decoding only its chunks.  This module is
the format; :class:`.chunks.OpenStore` reads and writes the files (``put_shard``, ``read_band``).  zarr
reads these files back as its own, and this module zarr's (tests/test_store_shards.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bragg_dask.store.codec import ChunkCodec, codec_of, crc32c
from bragg_dask.store.integrity import DamagedChunk

_EMPTY = 0xFFFFFFFFFFFFFFFF


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """A sharded array's layout: ``shard`` (G, rows, cols) per file (G frames), ``inner`` (1, rows, cols)
    per chunk, the inner chunks' ``codec`` (zstd, and a CRC-32C where checksummed), the dtype
    (little-endian) and the fill value."""

    shard: tuple[int, int, int]
    inner: tuple[int, int, int]
    codec: ChunkCodec
    dtype: np.dtype
    fill: float

    @property
    def grid(self) -> tuple[int, int]:
        """A frame's inner chunks: (rows, columns) of them."""
        return self.shard[1] // self.inner[1], self.shard[2] // self.inner[2]

    @property
    def frames(self) -> int:
        """Frames a shard holds (G)."""
        return self.shard[0]

    @property
    def per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def index_bytes(self) -> int:
        """The index and its checksum at the end of a shard file."""
        return 16 * self.frames * self.per_frame + 4


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
    if len(shard) != 3 or len(chunk) != 3 or chunk[0] != 1 or shard[1] % chunk[1] or shard[2] % chunk[2]:
        return None
    return ShardLayout(shard, chunk, codec, np.dtype(array.dtype).newbyteorder("<"), meta.fill_value)


def encode_frame(
    lay: ShardLayout, image: np.ndarray, codec: ChunkCodec, pool=None
) -> Sequence[bytes | memoryview | None]:
    """One frame's inner chunks, encoded: ``image`` ``(rows, cols)`` (at most the shard's size) cut into
    inner chunks, each padded with the fill value and encoded by ``codec`` (the layout's; on ``pool``'s
    threads when given).  A checksummed layout stores every chunk; another leaves out (None) the chunks
    all of fill value."""
    gs, gf = lay.grid
    _, cs, cf = lay.inner
    image = np.asarray(image, dtype=lay.dtype)

    def one(ij: tuple[int, int]) -> bytes | None:
        i, j = ij
        block = image[i * cs : (i + 1) * cs, j * cf : (j + 1) * cf]
        if not codec.crc and (block.size == 0 or not np.any(block != lay.fill)):
            return None
        if block.shape == (cs, cf):  # a whole chunk: its bytes (ChunkCodec.encode makes them contiguous)
            return codec.encode(block)
        full = np.full((cs, cf), lay.fill, dtype=lay.dtype)
        full[: block.shape[0], : block.shape[1]] = block
        return codec.encode(full)

    cells = [(i, j) for i in range(gs) for j in range(gf)]
    return list(pool.map(one, cells)) if pool is not None else [one(c) for c in cells]


def assemble(
    lay: ShardLayout, frames: Sequence[Sequence[bytes | bytearray | memoryview | None] | None]
) -> bytes | None:
    """A shard file from its frames' encoded chunks (:func:`encode_frame`; up to G frames, None for a frame
    not stored): the chunks one after the other, then the index and its checksum; None when no chunk is
    stored (zarr then keeps no file)."""
    parts: list[bytes | bytearray | memoryview | None] = []
    for k in range(lay.frames):
        entry = frames[k] if k < len(frames) else None
        parts.extend(entry if entry is not None else [None] * lay.per_frame)
    if all(p is None for p in parts):
        return None
    index = np.full((len(parts), 2), _EMPTY, dtype="<u8")
    offset = 0
    for k, p in enumerate(parts):
        if p is not None:
            index[k] = offset, len(p)
            offset += len(p)
    raw = index.tobytes()
    return b"".join([bytes(p) for p in parts if p is not None] + [raw, crc32c(raw)])


def encode(lay: ShardLayout, images: Sequence[np.ndarray | None], codec: ChunkCodec, pool=None) -> bytes | None:
    """A shard file of ``images`` (its frames in order, up to G; None: a frame not stored): see
    :func:`encode_frame` and :func:`assemble`."""
    return assemble(lay, [None if im is None else encode_frame(lay, im, codec, pool) for im in images])


def split(lay: ShardLayout, raw: bytes, file: str) -> list[Sequence[bytes | memoryview | None] | None]:
    """A shard file's chunks as they are stored (checked: the index, not the chunks), a list per frame
    (None: a chunk not stored): to write the shard again with one frame replaced, the others' bytes kept."""
    index = read_index(lay, raw, file)
    view = memoryview(raw)
    chunks = [None if off == _EMPTY else view[off : off + n] for off, n in index.tolist()]
    return [chunks[k * lay.per_frame : (k + 1) * lay.per_frame] for k in range(lay.frames)]


def parse_index(lay: ShardLayout, tail: bytes, data: int, file: str) -> np.ndarray:
    """The shard's index from ``tail`` (the file's last :attr:`ShardLayout.index_bytes` bytes), checked: its
    CRC-32C, and every stored chunk within the file's ``data`` bytes before it (:class:`DamagedChunk`
    naming ``file`` otherwise)."""
    body = tail[: len(tail) - 4]
    if crc32c(body) != tail[len(tail) - 4 :]:
        raise DamagedChunk(file, "its shard index fails its CRC-32C checksum (changed or truncated)")
    index = np.frombuffer(body, dtype="<u8").reshape(-1, 2)
    off, nbytes = index[:, 0], index[:, 1]
    empty = (off == _EMPTY) & (nbytes == _EMPTY)
    # (each entry against the data's size first: a sum of two huge values cannot wrap past it)
    bad = ~empty & ((off == _EMPTY) | (nbytes == _EMPTY) | (off > data) | (nbytes > data - np.minimum(off, data)))
    if bad.any():
        k = int(np.argmax(bad))
        raise DamagedChunk(
            file,
            f"its shard index places inner chunk {k} at bytes {int(off[k])}+{int(nbytes[k])}, beyond the {data} "
            "bytes of chunks",
        )
    return index


def read_index(lay: ShardLayout, raw: bytes, file: str) -> np.ndarray:
    """The shard's index, ``(chunks, 2)`` (offset, nbytes), from the whole file's bytes, checked
    (:func:`parse_index`)."""
    size = lay.index_bytes
    if len(raw) < size:
        raise DamagedChunk(file, f"truncated: {len(raw)} bytes, less than its index of {size}")
    return parse_index(lay, raw[len(raw) - size :], len(raw) - size, file)


def read_slot(lay: ShardLayout, file: str, slot: int, row: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Frame ``slot`` (of the G) of the shard file ``file``, read without the others: ``(index, data)``, the
    frame's rows of the checked index with offsets into ``data`` (a uint8 array of the bytes from its first
    stored chunk to the end of its last; ``row``: of that row of inner chunks only, the others' rows of the
    index marked not stored); None where there is no file.  :class:`DamagedChunk` where the file cannot be
    read or its index is damaged."""
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedChunk(file, f"unreadable ({exc.strerror or type(exc).__name__})") from None
    try:
        size = os.fstat(fd).st_size
        if size < lay.index_bytes:
            raise DamagedChunk(file, f"truncated: {size} bytes, less than its index of {lay.index_bytes}")
        index = parse_index(
            lay, _pread(fd, lay.index_bytes, size - lay.index_bytes, file), size - lay.index_bytes, file
        )
        rows = index[slot * lay.per_frame : (slot + 1) * lay.per_frame].copy()
        stored = rows[:, 0] != _EMPTY
        if row is not None:
            gf = lay.grid[1]
            stored[: row * gf] = stored[(row + 1) * gf :] = False
        if not stored.any():
            return rows, np.zeros(0, np.uint8)
        lo = int(rows[stored, 0].min())
        hi = int((rows[stored, 0] + rows[stored, 1]).max())
        rows[stored, 0] -= lo
        if row is not None:  # (a chunk of another row is not read: never asked for)
            rows[~stored] = _EMPTY
        return rows, np.frombuffer(_pread(fd, hi - lo, lo, file), dtype=np.uint8)
    except OSError as exc:
        raise DamagedChunk(file, f"unreadable ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)


def _pread(fd: int, n: int, at: int, file: str) -> bytes:
    out = os.pread(fd, n, at)
    if len(out) != n:
        raise DamagedChunk(file, f"truncated while read: {len(out)} of {n} bytes at {at}")
    return out


def inner_chunk(lay: ShardLayout, raw: bytes | np.ndarray, index: np.ndarray, k: int, file: str) -> np.ndarray | None:
    """Inner chunk ``k`` (C order within ``index``'s rows) of the shard ``raw`` (its bytes, or a uint8 array
    of them: the chunk read without a copy), ``(rows, cols)`` little-endian, checked; None where it is not
    stored (an older store's chunk all of fill value; a frame not written, or damage, in a checksummed one)."""
    off, nbytes = (int(v) for v in index[k])
    _, cs, cf = lay.inner
    where = f"{file} (inner chunk {divmod(k % lay.per_frame, lay.grid[1])})"
    if off == _EMPTY:
        if lay.codec.crc:
            raise DamagedChunk(where, "missing from its shard")
        return None
    data = np.frombuffer(lay.codec.decode(raw[off : off + nbytes], where), dtype=lay.dtype)
    if data.size != cs * cf:
        raise DamagedChunk(where, f"holds {data.size} values, not {cs * cf}")
    return data.reshape(cs, cf)


def slot_view(lay: ShardLayout, raw: bytes | None, slot: int, file: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Frame ``slot``'s ``(index rows, data)`` of a whole shard file's bytes ``raw`` (None: no file)."""
    if raw is None:
        return None
    index = read_index(lay, raw, file)
    return index[slot * lay.per_frame : (slot + 1) * lay.per_frame], np.frombuffer(raw, dtype=np.uint8)


def decode_band(
    lay: ShardLayout, found: tuple[np.ndarray, np.ndarray] | None, width: int, s0: int, s1: int, file: str = "shard"
) -> np.ndarray:
    """Rows ``s0:s1`` (within one row of inner chunks) and columns ``0:width`` of a frame whose chunks
    ``found`` holds (:func:`read_slot`, :func:`slot_view`; None: no file, all fill value): only their chunks
    decoded and checked (native byte order)."""
    _, cs, cf = lay.inner
    gs, gf = lay.grid
    i, r0 = divmod(s0, cs)
    if s1 - s0 > cs - r0:
        raise ValueError(f"rows {s0}:{s1} cross a row of chunks of {cs}")
    band = np.full((s1 - s0, width), lay.fill, dtype=lay.dtype.newbyteorder("="))
    if found is None:
        return band
    index, view = found
    for j in range(-(-width // cf)):
        chunk = inner_chunk(lay, view, index, i * gf + j, file)
        if chunk is None:
            continue
        f0, f1 = j * cf, min((j + 1) * cf, width)
        band[:, f0:f1] = chunk[r0 : r0 + s1 - s0, : f1 - f0]
    return band


def decode_frame(
    lay: ShardLayout, found: tuple[np.ndarray, np.ndarray] | None, out: np.ndarray, file: str = "shard"
) -> np.ndarray:
    """The whole frame whose chunks ``found`` holds (:func:`read_slot`, :func:`slot_view`; None: no file, all
    fill value) into ``out`` ``(rows, cols)`` (any dtype the values fit; at most the shard's size): every
    inner chunk decoded and checked without a copy of its bytes."""
    _, cs, cf = lay.inner
    gs, gf = lay.grid
    rows, cols = out.shape
    if found is None:
        out[...] = lay.fill
        return out
    index, view = found
    for i in range(-(-rows // cs)):
        for j in range(-(-cols // cf)):
            chunk = inner_chunk(lay, view, index, i * gf + j, file)
            s0, f0 = i * cs, j * cf
            s1, f1 = min(s0 + cs, rows), min(f0 + cf, cols)
            out[s0:s1, f0:f1] = lay.fill if chunk is None else chunk[: s1 - s0, : f1 - f0]
    return out
