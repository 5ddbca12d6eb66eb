"""The region of interest (``-roi``): which pixels are rendered, as boolean windows of the detector.

``bounds`` are the ROI clipped to the detector, inclusive ``(fmin, fmax, smin, smax)`` in pixels
(``Detector.roi_bounds``); a window is ``(s0, s1, f0, f1)``, half-open, slow then fast.
"""

from __future__ import annotations

import numpy as np


def mask_from_bounds(bounds: tuple[int, int, int, int], window: tuple[int, int, int, int]) -> np.ndarray:
    """``(s1 - s0, f1 - f0)`` bool: the pixels of ``window`` inside the inclusive ROI ``bounds``."""
    fmin, fmax, smin, smax = bounds
    if smin <= window[0] and window[1] - 1 <= smax and fmin <= window[2] and window[3] - 1 <= fmax:
        return np.ones((window[1] - window[0], window[3] - window[2]), dtype=bool)  # (the usual case: no ROI)
    s = np.arange(window[0], window[1])[:, None]
    f = np.arange(window[2], window[3])[None, :]
    return (f >= fmin) & (f <= fmax) & (s >= smin) & (s <= smax)


def roi_mask(det, tile=None) -> np.ndarray:
    """Bool, pixels inside the ROI (the ``-mask`` file ignored): the whole ``(spixels, fpixels)``, or
    one tile's ``(n_slow, n_fast)``."""
    window = (0, det.spixels, 0, det.fpixels) if tile is None else (tile.s0, tile.s1, tile.f0, tile.f1)
    return mask_from_bounds(det.roi_bounds, window)


def rendered_mask(det, tile) -> np.ndarray:
    """``(n_slow, n_fast)`` bool: pixels of the tile inside the ROI and not masked (``-mask``)."""
    m = roi_mask(det, tile)
    if det.mask is not None:
        m = m & det.mask[tile.s0 : tile.s1, tile.f0 : tile.f1]
    return m


def roi_count(det) -> int:
    """Pixels inside the ROI (mask ignored), counted without a whole-detector mask."""
    fmin, fmax, smin, smax = det.roi_bounds
    nf = max(0, min(fmax, det.fpixels - 1) - max(fmin, 0) + 1)
    ns = max(0, min(smax, det.spixels - 1) - max(smin, 0) + 1)
    return nf * ns
