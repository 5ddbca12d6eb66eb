"""Detector response (noisify): photons -> ADU, the noiseless image and the noisy one.

Noiseless: ``photons * gain + adc``, clipped to [0, 65535] (for ``-bits 32`` too, as noisify), then
truncated to integers.  Noisy (tiling-independent, counter-based: see ``noise.py``): per pixel
``photons * (1 + flicker * N1) * (1 + calibration * Nc)``, Poisson, [the PSF], ``* gain + adc +
readout * N2``, clipped to 65535 (16-bit) or 2^31 - 1 (32-bit).  ``N1``, ``N2`` are standard normal
deviates of the run's seed, ``Nc`` of the calibration seed, so the calibration error of a pixel is the
same from image to image.  Images are numpy ``(S, F)``; ``index`` the pixels' global raster indices.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

from bragg_dask.detector.noise import poisson, uniforms

INT16_MAX = 65535.0
INT32_MAX = 2147483647.0
#: draw numbers of the Gaussian deviates (Box-Muller pairs), far from the Poisson sampler's draws
FLICKER_DRAW, CALIBRATION_DRAW, READOUT_DRAW = 3_000_000_000, 3_100_000_000, 3_200_000_000


def to_adu(values: np.ndarray, gain: float, adc: float, top: float, readout=None) -> tuple[np.ndarray, int]:
    """The ADU conversion, the one place it is written (its C twin: ``adu_value`` in
    ``native_detector.c``): ``values * gain + adc [+ readout]``, the overloads (above ``top``) counted,
    clipped to ``[0, top]``.  Returns ``(float64 ADU, overloads)``; the caller truncates to its integers."""
    adu = np.asarray(values, dtype=np.float64) * gain
    adu += adc
    if readout is not None:
        adu += readout
    overloads = int(np.count_nonzero(adu > top))
    np.clip(adu, 0.0, top, out=adu)
    return adu, overloads


def adu_noiseless(photons: np.ndarray, gain: float, adc: float, bits: int) -> np.ndarray:
    """The noiseless int image ``(S, F)`` (uint16 or uint32 for ``bits``, clipped to 65535 for both, as
    noisify) of ``photons`` ``(S, F)`` (16 bits: by the C library where it builds, the same values)."""
    if bits == 16:
        from bragg_dask.physics.backends import native

        lib = native.detector_library()
        if lib is not None:
            x = np.ascontiguousarray(photons, dtype=np.float64)
            out = np.empty(x.shape, dtype=np.uint16)
            dp = np.array([gain, adc], dtype=np.float64)
            lib.adu16(x.size, dp.ctypes.data, x.ctypes.data, out.ctypes.data)
            return out
    adu, _ = to_adu(photons, gain, adc, INT16_MAX)
    return adu.astype(np.uint16 if bits == 16 else np.uint32)


def gaussian(seed: int, index: np.ndarray, draw: int) -> np.ndarray:
    """Standard normal deviates, one per ``index`` ``(...)``: Box-Muller of two counter-based uniforms."""
    u1 = uniforms(seed, index, draw)
    u2 = uniforms(seed, index, draw + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def photon_counts(
    photons: np.ndarray, index: np.ndarray | int, *, seed: int, calib_seed: int, flicker: float, calibration: float
) -> np.ndarray:
    """Poisson photon counts ``(S, F)`` float64 of the mean ``photons`` ``(S, F)`` after flicker and
    the per-pixel calibration error.  ``index``: the pixels' global indices ``(S, F)``, or the first
    pixel's where they run on in raster order (a band of whole rows).  Only pixels with photons draw
    (a pixel of none counts none, whatever its flicker and calibration)."""
    mean = np.asarray(photons, dtype=np.float64)
    lit = np.flatnonzero(mean)
    at = lit + index if np.ndim(index) == 0 else np.asarray(index).ravel()[lit]
    m = mean.ravel()[lit]
    if flicker > 0:
        m = m * (1.0 + flicker * gaussian(seed, at, FLICKER_DRAW))
    if calibration > 0:
        factor = _calibration_rows(calib_seed, calibration, int(index), mean.size) if np.ndim(index) == 0 else None
        m = m * (factor[lit] if factor is not None else 1.0 + calibration * gaussian(calib_seed, at, CALIBRATION_DRAW))
    out = np.zeros(mean.shape)
    out.ravel()[lit] = poisson(np.clip(m, 0.0, None), at, seed)
    return out


_CAL_CACHE: collections.OrderedDict = collections.OrderedDict()
_CAL_LOCK = threading.Lock()
CAL_CACHE_VALUES = 1 << 24  # at most this many factors kept (128 MiB): a Pilatus 6M frame's, or an Eiger 9M's


def _calibration_rows(calib_seed: int, calibration: float, first: int, n: int) -> np.ndarray | None:
    """The calibration factors ``1 + calibration * N`` of pixels ``first .. first + n`` (every pixel),
    kept for the next frame of a dataset (the error is the same in every frame): the same values as
    drawn for the lit pixels alone.  None where they would not fit the cache."""
    if n > CAL_CACHE_VALUES:
        return None
    key = (calib_seed, calibration, first, n)
    with _CAL_LOCK:
        hit = _CAL_CACHE.get(key)
        if hit is not None:
            _CAL_CACHE.move_to_end(key)
            return hit
    factor = 1.0 + calibration * gaussian(calib_seed, np.arange(first, first + n, dtype=np.int64), CALIBRATION_DRAW)
    with _CAL_LOCK:
        _CAL_CACHE[key] = factor
        while sum(v.size for v in _CAL_CACHE.values()) > CAL_CACHE_VALUES:
            _CAL_CACHE.popitem(last=False)
    return factor


def adu_noisy(
    photons: np.ndarray, index: np.ndarray | None, *, seed: int, gain: float, adc: float, readout: float, bits: int
) -> tuple[np.ndarray, int]:
    """The noisy int image of (counted, blurred) ``photons`` ``(S, F)``: ``(uint16|uint32, overloads)``;
    ``index`` (the pixels' global indices) is read only for the readout noise."""
    noise = None
    if readout > 0:
        if index is None:
            raise ValueError("readout noise needs the pixels' indices")
        noise = readout * gaussian(seed, index, READOUT_DRAW)
    adu, overloads = to_adu(photons, gain, adc, INT16_MAX if bits == 16 else INT32_MAX, noise)
    return adu.astype(np.uint16 if bits == 16 else np.uint32), overloads
