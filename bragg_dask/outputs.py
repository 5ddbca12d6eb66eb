"""Writing the C program's output files from a finished float image."""

from __future__ import annotations

import logging
import time

import numpy as np

from .io.pgm import write_pgm
from .io.raw import write_float_image
from .io.smv import int_image, write_smv
from .physics.noise import noise_image
from .stats import ImageStats

log = logging.getLogger(__name__)


def roi_mask(det, tile=None) -> np.ndarray:
    """Bool, pixels inside the ROI (mask ignored): the whole ``(spixels, fpixels)``, or one tile's."""
    return mask_from_bounds(det.roi_bounds, (0, det.spixels, 0, det.fpixels) if tile is None else
                            (tile.s0, tile.s1, tile.f0, tile.f1))


def mask_from_bounds(bounds, window) -> np.ndarray:
    """Bool ``window`` ``(s0, s1, f0, f1)`` of the inclusive ROI ``bounds`` ``(fmin, fmax, smin, smax)``."""
    fmin, fmax, smin, smax = bounds
    s = np.arange(window[0], window[1])[:, None]
    f = np.arange(window[2], window[3])[None, :]
    return (f >= fmin) & (f <= fmax) & (s >= smin) & (s <= smax)


def max_position_m(det, stats: ImageStats) -> tuple[float, float]:
    """(Fdet, Sdet) in metres of the last sub-pixel of the brightest pixel, as the C program prints."""
    if stats.max_pos is None:
        return (0.0, 0.0)
    s, f = stats.max_pos
    os_ = det.oversample
    sub = det.pixel_size_m / os_
    return (sub * (f * os_ + os_ - 1) + sub / 2.0, sub * (s * os_ + os_ - 1) + sub / 2.0)


def int_scale(stats: ImageStats, user_scale: float) -> float:
    """``-scale`` if positive, else 55000/max_I (1 for an empty image)."""
    if user_scale > 0.0:
        return user_scale
    return 55000.0 / stats.max_I if stats.max_I > 0.0 else 1.0


def pgm_scale(stats: ImageStats, user_scale: float, int_file_scale: float) -> float:
    if user_scale > 0.0:
        return user_scale
    return 250.0 / (5.0 * stats.rmsd) if stats.rmsd > 0.0 else int_file_scale


def noise_seed(outputs) -> int:
    """``-seed N`` if given, else a time-based seed (as the C program); the run reports it."""
    return int(outputs.seed) if outputs.seed is not None else int(time.time())


def write_outputs(sim, image: np.ndarray, stats: ImageStats, outputs, cwd: str = ".") -> list[str]:
    """Write the float/int/PGM/noise files that ``outputs`` asks for; returns the paths written."""
    import os

    written = []
    in_roi = roi_mask(sim.detector)
    scale = int_scale(stats, outputs.intfile_scale)
    if outputs.floatfile:
        path = os.path.join(cwd, outputs.floatfile)
        write_float_image(path, image)
        written.append(path)
    if outputs.intfile:
        path = os.path.join(cwd, outputs.intfile)
        write_smv(path, sim, int_image(image, in_roi, scale, outputs.adc))
        written.append(path)
    if outputs.pgmfile:
        path = os.path.join(cwd, outputs.pgmfile)
        write_pgm(path, image, in_roi, pgm_scale(stats, outputs.pgm_scale, scale))
        written.append(path)
    if outputs.noisefile:
        path = os.path.join(cwd, outputs.noisefile)
        seed = noise_seed(outputs)
        det = sim.detector
        pixels, overloads = noise_image(image, in_roi, seed=seed, adc=outputs.adc, fpixels=det.fpixels)
        write_smv(path, sim, pixels)
        log.info("noise seed %d, %d overloads", seed, overloads)
        written.append(path)
    return written
