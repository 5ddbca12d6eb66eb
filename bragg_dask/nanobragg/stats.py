"""Image statistics of the C program (max_I, mean, rms, rmsd), from per-tile partial sums.

Tiles report partial sums over their rendered pixels; :func:`combine` reduces them in a fixed
(tile) order, so the result does not depend on which worker finished first.  The sums are exact:
each tile's sum and sum of squares come as float64 parts (:mod:`bragg_dask.physics.sums`), and
:func:`combine` adds every tile's parts with ``math.fsum``: the frame's sums are the correctly rounded
exact sums of its pixels, the same bits whatever the tiling, the workers or the device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ImageStats:
    """Statistics over rendered pixels (inside the ROI, not masked); ``max_pos`` is ``(slow, fast)``
    (``(panel, slow, fast)`` on a detector of panels)."""

    max_I: float
    max_pos: tuple[int, ...] | None
    mean: float
    rms: float
    rmsd: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _total(partials: list[dict], key: str) -> float:
    """The correctly rounded sum of the partials' ``key`` (each tile's exact parts where it has them)."""
    return math.fsum(x for p in partials for x in p.get(f"{key}_parts") or (p[key],))


def combine(partials: list[dict], n_roi: int) -> ImageStats:
    """Reduce per-tile partials (``sum``, ``sumsq``, ``n``, ``max``, ``argmax``) in list order.

    ``n_roi`` counts every ROI pixel, masked ones included: the C program's rmsd pass runs over
    them (they hold 0) while the mean only counts rendered pixels.
    """
    total = _total(partials, "sum")
    sumsq = _total(partials, "sumsq")
    n = sum(p["n"] for p in partials)
    max_i, pos = 0.0, None  # as in C: max_I starts at 0 and moves on a strictly larger value
    for p in partials:
        if p["n"] and p["max"] > max_i:
            max_i, pos = p["max"], tuple(p["argmax"])
    mean = total / max(n, 1)
    rms = math.sqrt(max(sumsq, 0.0) / max(n - 1, 1))
    # sum over ROI of (v - mean)^2, with masked ROI pixels holding 0
    dev = sumsq - 2.0 * mean * total + n * mean * mean + (n_roi - n) * mean * mean
    rmsd = math.sqrt(max(dev, 0.0) / max(n_roi - 1, 1))
    return ImageStats(max_I=max_i, max_pos=pos, mean=mean, rms=rms, rmsd=rmsd, n=n)


def int_scale(stats: ImageStats, user_scale: float) -> float:
    """The int image's scale: ``-scale`` if positive, else 55000/max_I (1 for an empty image)."""
    if user_scale > 0.0:
        return user_scale
    return 55000.0 / stats.max_I if stats.max_I > 0.0 else 1.0


def pgm_scale(stats: ImageStats, user_scale: float, int_file_scale: float) -> float:
    """The PGM preview's scale: ``-pgmscale`` if positive, else 250/(5 rmsd) (the int scale for a flat
    image)."""
    if user_scale > 0.0:
        return user_scale
    return 250.0 / (5.0 * stats.rmsd) if stats.rmsd > 0.0 else int_file_scale
