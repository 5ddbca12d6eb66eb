"""PGM previews (``-pgmfile``): binary P5, one byte per pixel."""

from __future__ import annotations

import numpy as np

from bragg_dask.io.atomic import atomic_write


def pgm_bytes(image: np.ndarray, in_roi: np.ndarray, scale: float) -> np.ndarray:
    """``uint8(min(255, v*scale))`` truncated, inside the ROI; 0 outside."""
    v = np.minimum(image.astype(np.float64) * scale, 255.0)
    out = np.where(in_roi, v, 0.0)
    return out.astype(np.uint8)


def write_pgm(path: str, image: np.ndarray, in_roi: np.ndarray, scale: float) -> None:
    """Write ``(spixels, fpixels)`` ``image`` (photons) as the C program's P5 preview, ``scale`` grey levels
    per photon."""
    s, f = image.shape
    with atomic_write(path) as fh:
        fh.write(f"P5\n{f} {s}\n# pixels scaled by {scale:g}\n255\n".encode("ascii"))
        fh.write(pgm_bytes(image, in_roi, scale).tobytes())
