"""The chunk codecs a store's own readers and writers apply without zarr: little-endian bytes through
zstd, then (stores of format 2) the CRC-32C of the compressed bytes, as Zarr v3's ``crc32c`` codec
appends it; every decode checked (:class:`~.integrity.DamagedChunk` naming the file, never data).

Part of :mod:`bragg_dask.store` (:mod:`.chunks` and :mod:`.shards` use it).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from bragg_dask.store.integrity import DamagedChunk


@dataclasses.dataclass(frozen=True)
class ChunkCodec:
    """The chunk codecs this module reads and writes itself: little-endian bytes through zstd at
    ``level``, then (``crc``) the CRC-32C of the compressed bytes, little-endian, as Zarr v3's
    ``crc32c`` codec appends it."""

    level: int
    crc: bool

    def encode(self, data: np.ndarray) -> bytes:
        body = _zstd(self.level).encode(np.ascontiguousarray(data))
        return body + crc32c(body) if self.crc else body

    def check(self, raw: bytes, file: str, size: int) -> None:
        """The chunk whole and of ``size`` bytes uncompressed, else :class:`DamagedChunk`: its checksum where
        it has one (what was written is what is read) and the size its zstd frame declares; else (or where
        the frame declares none) a full decode."""
        if self.crc:
            if len(raw) < 4 or crc32c(raw[:-4]) != raw[-4:]:
                raise DamagedChunk(
                    file,
                    f"truncated ({len(raw)} bytes)"
                    if len(raw) < 4
                    else "fails its CRC-32C checksum (changed or truncated)",
                )
            declared = zstd_content_size(raw[:-4])
            if declared is not None:
                if declared != size:
                    raise DamagedChunk(file, f"holds {declared} bytes, not the chunk's {size} (another array's?)")
                return
        n = len(self.decode(raw, file))
        if n != size:
            raise DamagedChunk(file, f"holds {n} bytes, not the chunk's {size} (another array's?)")

    def decode(self, raw: bytes | np.ndarray, file: str) -> bytes:
        """The chunk's uncompressed bytes (``raw``: its bytes, or a uint8 array viewing them);
        :class:`DamagedChunk` naming ``file`` where they cannot be."""
        if self.crc:
            if len(raw) < 4:
                raise DamagedChunk(file, f"truncated ({len(raw)} bytes)")
            raw, tail = raw[:-4], bytes(raw[-4:])  # raw: bytes, or a uint8 view into a shard's bytes
            if crc32c(raw) != tail:
                raise DamagedChunk(file, "fails its CRC-32C checksum (changed or truncated)")
        try:
            return _zstd(self.level).decode(raw)
        except Exception:  # noqa: BLE001 - numcodecs raises RuntimeError or ValueError for a bad frame
            raise DamagedChunk(file, "not a zstd frame (truncated or overwritten)") from None


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def zstd_content_size(frame: bytes) -> int | None:
    """The uncompressed size a zstd frame's header declares (RFC 8878 section 3.1.1.1), None where it
    declares none or is not a zstd frame."""
    if len(frame) < 6 or frame[:4] != _ZSTD_MAGIC:
        return None
    fhd = frame[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    n = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if n == 0 or len(frame) < pos + n:
        return None
    value = int.from_bytes(frame[pos : pos + n], "little")
    return value + 256 if n == 2 else value


def chunk_codec(array) -> ChunkCodec | None:
    """The :class:`ChunkCodec` of an array whose chunks are plain little-endian bytes through zstd
    without zstd's own checksum, optionally followed by ``crc32c``; else None (zarr reads it)."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

    return codec_of(array.metadata.codecs, (BytesCodec, ZstdCodec, Crc32cCodec))


def codec_of(codecs, kinds) -> ChunkCodec | None:
    """The :class:`ChunkCodec` that ``codecs`` (a zarr codec list) describe, else None; ``kinds``: zarr's
    bytes, zstd and crc32c codec classes."""
    bytes_, zstd, crc = kinds
    codecs = list(codecs)
    checked = len(codecs) == 3 and isinstance(codecs[2], crc)
    if checked:
        codecs = codecs[:2]
    if len(codecs) != 2 or not isinstance(codecs[0], bytes_) or not isinstance(codecs[1], zstd):
        return None
    endian = codecs[0].endian
    if (endian is not None and getattr(endian, "value", endian) != "little") or codecs[1].checksum:
        return None
    return ChunkCodec(int(codecs[1].level), checked)


def crc32c(data) -> bytes:
    """The CRC-32C of ``data``, four bytes little-endian (Zarr v3's ``crc32c`` codec)."""
    import google_crc32c

    return int(google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)).to_bytes(4, "little")


@functools.lru_cache(maxsize=4)
def _zstd(level: int):
    from numcodecs import Zstd

    return Zstd(level=level)
