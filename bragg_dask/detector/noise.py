"""Poisson photon noise that does not depend on tiling: counter-based random numbers.

The C program draws one sequential ``ran1`` stream over the image, so its noise depends on pixel
order.  Here every random number is a hash of ``(seed, pixel index, draw number)`` (SplitMix64
finaliser), so a pixel's noise is the same whichever tile or worker computes it.  The counts are
exact Poisson deviates: multiplication of uniforms (as the C program) below a mean of 12, and
Hormann's transformed rejection with squeeze (PTRS) above.  Where the C library builds
(``native.detector_library``), the uniforms and the small-mean sampler run there, giving the same
numbers (integer hashing, then the same IEEE multiplications and comparisons).
"""

from __future__ import annotations

import math

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SMALL_MEAN = 12.0
_MAX_ROUNDS = 10_000
_LGAMMA_TABLE = np.array([0.0] + [math.lgamma(v) for v in range(1, 10)])  # [x] = lgamma(x), x = 1 .. 9


def _mix(z: np.ndarray) -> np.ndarray:
    """A 64-bit integer mixing function, element-wise: ``(...)`` uint64 -> ``(...)`` uint64."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, index: np.ndarray, draw: int | np.ndarray) -> np.ndarray:
    """Uniform deviates in (0, 1), one per ``index``: a pure function of (seed, index, draw).

    ``index``: ``(...)`` int; ``draw``: an int or broadcast against it.  Returns ``(...)`` float64.
    """
    with np.errstate(over="ignore"):
        key = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
        lib = _native()
        if lib is not None and np.ndim(draw) == 0:
            idx = np.ascontiguousarray(index, dtype=np.int64)
            out = np.empty(idx.shape, dtype=np.float64)
            lib.counter_uniforms(idx.size, int(key), idx.ctypes.data, int(draw) & 0xFFFFFFFFFFFFFFFF, out.ctypes.data)
            return out.reshape(np.shape(index))
        ctr = index.astype(np.uint64) * np.uint64(0x100000000) + np.asarray(draw, dtype=np.uint64)
        x = _mix(_mix(ctr * _GOLDEN) ^ key)
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def _native():
    """The C library's copies of the hot loops (``native_detector.c``: the same numbers), or None."""
    from bragg_dask.physics.backends import native

    return native.detector_library()


def poisson(mean: np.ndarray, index: np.ndarray, seed: int) -> np.ndarray:
    """Poisson counts ``(...)`` int64 (photons) with the given ``mean`` ``(...)`` (photons, >= 0) for
    pixels with global ``index`` ``(...)``."""
    mean = np.asarray(mean, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64)
    out = np.zeros(mean.shape, dtype=np.int64)
    small = (mean > 0) & (mean < _SMALL_MEAN)
    large = mean >= _SMALL_MEAN
    if small.any():
        out[small] = _poisson_small(mean[small], index[small], seed)
    if large.any():
        out[large] = _poisson_ptrs(mean[large], index[large], seed)
    return out


def _poisson_small(lam: np.ndarray, idx: np.ndarray, seed: int) -> np.ndarray:
    """Count uniforms multiplied until the product falls to exp(-lam) or below, minus one:
    ``lam``, ``idx`` ``(N,)`` -> ``(N,)`` int64."""
    g = np.exp(-lam)
    lib = _native()
    if lib is not None:
        with np.errstate(over="ignore"):
            key = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        g = np.ascontiguousarray(g)
        out = np.empty(lam.shape, dtype=np.int64)
        lib.poisson_small(lam.size, int(key), idx.ctypes.data, g.ctypes.data, out.ctypes.data)
        return out
    t = np.ones_like(lam)
    k = np.full(lam.shape, -1, dtype=np.int64)
    active = np.ones(lam.shape, dtype=bool)
    draw = 0
    while active.any():
        a = np.nonzero(active)[0]
        t[a] *= uniforms(seed, idx[a], draw)
        k[a] += 1
        active[a] = t[a] > g[a]
        draw += 1
    return k


def _poisson_ptrs(lam: np.ndarray, idx: np.ndarray, seed: int) -> np.ndarray:
    """Hormann (1993) PTRS: transformed rejection with squeeze, exact for lam >= 10:
    ``lam``, ``idx`` ``(N,)`` -> ``(N,)`` int64."""
    slam = np.sqrt(lam)
    loglam = np.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    out = np.zeros(lam.shape, dtype=np.int64)
    todo = np.arange(lam.size)
    for rnd in range(_MAX_ROUNDS):
        if todo.size == 0:
            return out
        u = uniforms(seed, idx[todo], 2 * rnd + 1_000_000) - 0.5
        v = uniforms(seed, idx[todo], 2 * rnd + 1_000_001)
        us = 0.5 - np.abs(u)
        k = np.floor((2.0 * a[todo] / us + b[todo]) * u + lam[todo] + 0.43)
        quick = (us >= 0.07) & (v <= vr[todo])
        bad = (k < 0) | ((us < 0.013) & (v > us))
        lg = _lgamma1(np.where(bad, 0.0, k) + 1.0)
        full = (
            np.log(v) + np.log(inv_alpha[todo]) - np.log(a[todo] / (us * us) + b[todo])
            <= -lam[todo] + k * loglam[todo] - lg
        )
        accept = quick | (~bad & full)
        out[todo[accept]] = k[accept].astype(np.int64)
        todo = todo[~accept]
    raise RuntimeError("Poisson sampler did not converge")  # pragma: no cover


def _lgamma1(x: np.ndarray) -> np.ndarray:
    """``lgamma(x)`` ``(N,)`` float64 for ``x`` ``(N,)`` >= 1 (vectorised Stirling series; x = k + 1 here)."""
    out = np.empty_like(x)
    small = x < 10
    if small.any():
        xs = x[small]
        whole = xs == np.floor(xs)  # x = k + 1 for integer k: a table of lgamma(1 .. 9)
        vals = _LGAMMA_TABLE[np.where(whole, xs, 1.0).astype(np.int64)]
        if not whole.all():
            vals[~whole] = [math.lgamma(v) for v in xs[~whole]]
        out[small] = vals
    z = x[~small]
    if z.size:
        zi = 1.0 / z
        out[~small] = (
            (z - 0.5) * np.log(z)
            - z
            + 0.5 * math.log(2 * math.pi)
            + zi * (1 / 12 - zi * zi * (1 / 360 - zi * zi * (1 / 1260 - zi * zi / 1680)))
        )
    return out


def noise_image(
    image: np.ndarray,
    in_roi: np.ndarray,
    *,
    seed: int,
    adc: float,
    first_index: int = 0,
    fpixels: int | None = None,
    s0: int = 0,
    f0: int = 0,
) -> tuple[np.ndarray, int]:
    """The noisy SMV image of a float image (or a tile of one): ``(uint16 pixels, overloads)``.

    ``v = Poisson(float) + adc``, clipped to 65535 (counted as overloads) and truncated, inside the
    ROI; 0 outside.  Pixel ``(s, f)`` of the tile draws with global index
    ``first_index + (s0 + s) * fpixels + (f0 + f)``, so tiles of one image agree with the whole.
    ``image``: ``(S, F)`` float photons; ``in_roi``: ``(S, F)`` bool; returns ``(S, F)`` uint16 ADU.
    """
    S, F = image.shape
    fp = fpixels if fpixels is not None else F
    idx = first_index + (np.arange(S)[:, None] + s0) * fp + (np.arange(F)[None, :] + f0)
    counts = poisson(np.where(in_roi, image, 0.0).astype(np.float64), idx, seed)
    v = counts.astype(np.float64) + adc
    overloads = int(np.count_nonzero(in_roi & (v > 65535.0)))
    v = np.clip(v, 0.0, 65535.0)
    return np.where(in_roi, v.astype(np.uint16), np.uint16(0)), overloads
