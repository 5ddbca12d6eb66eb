"""Pictures for the dashboard page: a tile max-pooled onto a frame's preview grid as one byte a preview
pixel, the preview in colour with the tiles not yet done hatched, and a PNG encoder (numpy and zlib only:
the scheduler needs nothing else to serve the page).

The preview of a ``S x F`` frame has one pixel per ``k x k`` block of detector pixels, ``k`` the
smallest integer that brings the longer side to at most :data:`PREVIEW_MAX`.  A tile contributes the
maximum of its rendered pixels over every block it touches, as a code: :data:`NOT_REACHED` (0) where
no tile has reported yet, :data:`NOTHING` (1) where the tiles that did render nothing (an ROI, a mask),
else ``2 + round(8 log2(1 + I))`` (eighths of an octave, up to about 3e9 photons).  The codes grow with
the intensity, so a block on a tile edge takes the maximum over both tiles in any order.  A tile's
report is a few kB whatever the dtype, and the picture's log scale is the code's own.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

#: longest side of a frame's preview, in preview pixels
PREVIEW_MAX = 512
#: longest side of a finished frame's thumbnail
THUMB_MAX = 128
NOT_REACHED, NOTHING = 0, 1
STEPS_PER_OCTAVE = 8

# colour scale (position in [0, 1], RGB): dark blue through purple and orange to pale yellow
_ANCHORS = (
    (0.0, (4, 6, 24)),
    (0.2, (40, 24, 96)),
    (0.45, (140, 40, 120)),
    (0.7, (236, 108, 52)),
    (0.88, (252, 196, 72)),
    (1.0, (255, 252, 214)),
)
_NOTHING_RGB = (0, 0, 0)  # rendered nothing: outside the ROI, masked
_TODO = ((58, 62, 70), (88, 94, 104))  # a tile not done yet: grey diagonal stripes


def _lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    pos = [a[0] for a in _ANCHORS]
    return np.stack([np.interp(x, pos, [a[1][c] for a in _ANCHORS]) for c in range(3)], axis=1).astype(np.uint8)


LUT = _lut()


def pooling(shape: tuple[int, int], limit: int = PREVIEW_MAX) -> int:
    """Detector pixels per preview pixel (each way) for a frame of ``shape``."""
    return max(1, math.ceil(max(shape) / max(limit, 1)))


def preview_shape(shape: tuple[int, ...], k: int) -> tuple[int, int]:
    return -(-shape[0] // k), -(-shape[1] // k)


def encode(photons: np.ndarray) -> np.ndarray:
    """Photons per pixel as preview codes (``-inf``: rendered nothing)."""
    v = np.asarray(photons, dtype=np.float32)
    out = np.full(v.shape, NOTHING, dtype=np.uint8)
    lit = np.isfinite(v)
    steps = np.log2(1.0 + np.clip(v[lit], 0.0, None)) * STEPS_PER_OCTAVE
    out[lit] = np.clip(np.rint(steps) + 2, 2, 255).astype(np.uint8)
    return out


def photons(codes: np.ndarray) -> np.ndarray:
    """The photons a code stands for (its bin's centre; NaN not reached, ``-inf`` nothing rendered)."""
    c = np.asarray(codes)
    out = np.exp2((c.astype(np.float64) - 2) / STEPS_PER_OCTAVE) - 1.0
    out[c == NOTHING] = -np.inf
    out[c == NOT_REACHED] = np.nan
    return out


def tile_block(image: np.ndarray, s0: int, f0: int, k: int, rendered: np.ndarray | None = None):
    """``(r0, c0, block)``: the tile at detector pixel ``(s0, f0)`` max-pooled onto the preview grid of
    factor ``k`` as codes (uint8); ``block`` covers preview rows ``r0 ...`` and columns ``c0 ...``."""
    img = np.asarray(image, dtype=np.float32)
    if rendered is not None and not bool(np.all(rendered)):
        img = np.where(rendered, img, np.float32(-np.inf))
    if k > 1:
        h, w = img.shape
        r0, c0 = s0 // k, f0 // k
        r1, c1 = -(-(s0 + h) // k), -(-(f0 + w) // k)
        pad = np.full(((r1 - r0) * k, (c1 - c0) * k), -np.inf, dtype=np.float32)
        pad[s0 - r0 * k : s0 - r0 * k + h, f0 - c0 * k : f0 - c0 * k + w] = img
        return r0, c0, encode(pad.reshape(r1 - r0, k, c1 - c0, k).max(axis=(1, 3)))
    return s0, f0, encode(img)


def merge_block(preview: np.ndarray, r0: int, c0: int, block: np.ndarray) -> None:
    """Fold a tile's block of codes into the preview (codes: the maximum wins)."""
    h, w = block.shape
    view = preview[r0 : r0 + h, c0 : c0 + w]
    np.maximum(view, block[: view.shape[0], : view.shape[1]], out=view)


def colour(preview: np.ndarray, todo: Sequence[tuple[int, int, int, int]] = ()) -> np.ndarray:
    """RGB uint8 picture of a preview of codes: ``log(1 + I)`` scaled to the frame's maximum; not reached
    hatched as not done, nothing rendered black; ``todo``: preview rectangles ``(r0, r1, c0, c1)`` of
    tiles not done, hatched whatever they hold."""
    c = np.asarray(preview, dtype=np.uint8)
    lit = c >= 2
    top = int(c.max()) - 2 if lit.any() else 0
    idx = np.zeros(c.shape, dtype=np.intp)
    if top > 0:
        idx[lit] = (c[lit].astype(np.intp) - 2) * 255 // top
    rgb = LUT[idx]
    rgb[c == NOTHING] = _NOTHING_RGB
    hatch = c == NOT_REACHED
    for r0, r1, c0, c1 in todo:
        hatch[r0:r1, c0:c1] = True
    if hatch.any():
        rr, cc = np.indices(c.shape)
        stripe = ((rr + cc) // 3) % 2 == 0
        rgb[hatch & stripe] = _TODO[0]
        rgb[hatch & ~stripe] = _TODO[1]
    return rgb


def shrink(preview: np.ndarray, limit: int = THUMB_MAX) -> np.ndarray:
    """A preview of codes max-pooled further so that its longer side is at most ``limit``."""
    k = pooling(preview.shape, limit)
    if k == 1:
        return preview.copy()
    h, w = preview.shape
    hh, ww = -(-h // k), -(-w // k)
    pad = np.zeros((hh * k, ww * k), dtype=np.uint8)
    pad[:h, :w] = preview
    return pad.reshape(hh, k, ww, k).max(axis=(1, 3))


def png(rgb: np.ndarray, level: int = 1) -> bytes:
    """An 8-bit RGB (``(h, w, 3)`` uint8) or grey (``(h, w)``) image as PNG bytes (zlib ``level`` 1: these
    pictures compress about as well as at 6, six times faster)."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    if a.ndim == 2:
        colour_type, channels = 0, 1
    elif a.ndim == 3 and a.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise ValueError(f"png: expected (h, w) or (h, w, 3), got {a.shape}")
    h, w = a.shape[:2]
    rows = np.zeros((h, 1 + w * channels), dtype=np.uint8)  # filter byte 0 (none) before each row
    rows[:, 1:] = a.reshape(h, w * channels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + chunk(b"IEND", b"")
    )
