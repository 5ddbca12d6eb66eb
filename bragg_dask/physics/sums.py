"""Exact sums of a tile's float32 values, the same bits however the image is cut into tiles.

A tile's sum and sum of squares are kept as :data:`PARTS` float64 parts each (:func:`exact_sums`);
:func:`bragg_dask.nanobragg.stats.combine` adds every tile's parts with ``math.fsum``, so that a frame's
statistics are the correctly rounded sums of its pixels whatever the tiling, the workers or the device.
"""

from __future__ import annotations

import math

import numpy as np

#: float64 parts a tile's exact sum (and sum of squares) is kept as: their total is the exact sum wherever
#: the tile's values span fewer than about 159 bits (photons from 1e-30 to 1e17), else within 2^-158 of it
#: (the frame's rounded sum could differ only if its exact value lay that close to a rounding boundary)
PARTS = 3


def exact_sums(values) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The sum and the sum of squares of ``values`` (float32: a numpy array or a torch tensor, on any
    device), each as :data:`PARTS` float64 parts (the correctly rounded sum, then the rounded remainders);
    None where a value is not finite.  Each float32 value is an integer mantissa times a power of two:
    the mantissas (and their squares, in two halves of 24 bits) are added per exponent in float64, exact
    below 2^29 values (every partial sum an integer below 2^53, in any order: a GPU's atomics too)."""
    import torch

    if isinstance(values, torch.Tensor) and values.device.type != "cpu":
        bins = _device_bins(values)
    else:
        bins = _host_bins(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    if bins is None:
        return None
    b_sum, b_hi, b_lo = (np.asarray(b).astype(np.int64) for b in bins)  # (integers, exactly)
    # value = m * 2^(eb - 150): the sum in units of 2^-149; a square's halves m^2 >> 24 and m^2 & 0xFFFFFF
    # times 2^(2 eb - 276) and 2^(2 eb - 300): the sum of squares in units of 2^-298 (eb >= 1)
    total = _shifted(b_sum, 1, -1)
    squares = _shifted(b_hi, 2, 22) + _shifted(b_lo, 2, -2)
    return _parts(total, -149), _parts(squares, -298)


def _shifted(bins: np.ndarray, a: int, b: int) -> int:
    """``sum(bins[k] << (a k + b))`` over the nonzero bins, exactly (Python integers)."""
    ks = np.flatnonzero(bins)
    return sum(v << s for v, s in zip(bins[ks].tolist(), (ks * a + b).tolist()))


def _host_bins(v: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """The bins of :func:`exact_sums` (float64: integers) for values in memory: by the C library
    (``native_labels.c``'s ``exact_bins``), or torch's loops where it cannot be built (the same integers)."""
    import torch

    from bragg_dask.physics.backends.native import labels_library

    if v.size >= 1 << 29:
        raise ValueError(f"{v.size} values: exact sums take fewer than 2^29 at once")
    lib = labels_library()
    if lib is None:
        return _device_bins(torch.from_numpy(v))
    bins = np.zeros(768, dtype=np.int64)
    if lib.exact_bins(v.ctypes.data, v.size, bins.ctypes.data):
        return None
    return tuple(bins.reshape(3, 256))


def _device_bins(v) -> tuple[np.ndarray, ...] | None:
    """The bins of :func:`exact_sums` where the values are (a GPU: three small arrays copied back), by torch:
    sums of integers below 2^53 in float64, exact in any order (a GPU's atomics too)."""
    import torch

    bits = v.reshape(-1).to(torch.float32).contiguous().view(torch.int32)
    if bits.numel() >= 1 << 29:
        raise ValueError(f"{bits.numel()} values: exact sums take fewer than 2^29 at once")
    e = (bits >> 23) & 0xFF
    if bool((e == 0xFF).any()):
        return None
    m = ((bits & 0x7FFFFF) | ((e > 0).to(torch.int32) << 23)).to(torch.int64)
    eb = e.clamp(min=1).to(torch.int64)  # a subnormal's exponent: that of the smallest normal
    signed = torch.where(bits < 0, -m, m).to(torch.float64)
    sq = m * m  # < 2^48
    bins = torch.stack(
        [
            torch.bincount(eb, weights=w, minlength=256)
            for w in (signed, (sq >> 24).to(torch.float64), (sq & 0xFFFFFF).to(torch.float64))
        ]
    ).cpu()
    return tuple(np.asarray(b.numpy(), dtype=np.float64) for b in bins)


def _parts(n: int, e: int) -> tuple[float, ...]:
    """The exact value ``n * 2^e`` (``n`` an integer of any size) as :data:`PARTS` floats: its correctly rounded
    value (Python's int to float rounds to nearest, ties to even), then each remainder's."""
    out: list[float] = []
    for _ in range(PARTS):
        p = math.ldexp(float(n), e) if n else 0.0
        out.append(p)
        n -= int(math.ldexp(p, -e))  # (p * 2^-e: an integer, exactly)
    return tuple(out)


def with_exact_sums(partial: dict, values) -> dict:
    """``partial`` (a tile's statistics) with its ``sum`` and ``sumsq`` made exact from ``values`` (its
    rendered pixels): the parts in ``sum_parts`` and ``sumsq_parts`` (unchanged where one is not finite)."""
    found = exact_sums(values)
    if found is None:
        return partial  # (the caller's sums stand)
    (total, *_), (sumsq, *_) = found
    return partial | {"sum": total, "sumsq": sumsq, "sum_parts": found[0], "sumsq_parts": found[1]}
