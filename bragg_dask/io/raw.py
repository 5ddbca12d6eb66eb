"""Raw float images (``-floatfile``): float32, little-endian, fast index fastest, no header."""

from __future__ import annotations

import numpy as np

from bragg_dask.io.atomic import atomic_write


def write_float_image(path: str, image: np.ndarray) -> None:
    """Write ``(spixels, fpixels)`` float32 pixels as the C program's ``-floatfile``."""
    with atomic_write(path) as fh:
        fh.write(np.ascontiguousarray(image, dtype="<f4").data.cast("B"))  # no copy of the bytes
