"""A tile's sums exact (``physics/sums.py``): a frame's statistics the correctly rounded sums of its pixels,
the same bits however the frame is cut into tiles (``nanobragg.stats.combine``)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from bragg_dask.nanobragg.stats import combine
from bragg_dask.physics.sums import PARTS, exact_sums


def _values(seed: int, n: int = 5000, low: float = -6) -> np.ndarray:
    """float32 values from 10^low to 1e6 photons, some zeros and negatives."""
    rng = np.random.default_rng(seed)
    v = (10.0 ** rng.uniform(low, 6, n)).astype(np.float32)
    v[rng.integers(0, n, 50)] = 0.0
    v[rng.integers(0, n, 20)] *= -1
    return v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_parts_are_the_exact_sums(seed):
    v = _values(seed)
    # (values of 1e-6 to 1e6: their sum spans about 90 bits, the squares' 140)
    sums, squares = exact_sums(v)
    assert len(sums) == len(squares) == PARTS
    exact = sum(Fraction(float(x)) for x in v)
    exact_sq = sum(Fraction(float(x)) ** 2 for x in v)
    assert sum(Fraction(p) for p in sums) == exact
    assert sum(Fraction(p) for p in squares) == exact_sq
    assert sums[0] == math.fsum(v.astype(np.float64)) and squares[0] == math.fsum(v.astype(np.float64) ** 2)
    assert exact_sums(torch.from_numpy(v)) == (sums, squares)  # (a tensor: the same)
    from bragg_dask.physics.sums import _device_bins, _host_bins

    host, device = _host_bins(v), _device_bins(torch.from_numpy(v))  # the C library's bins and torch's (a GPU's)
    assert all(np.array_equal(a, b) for a, b in zip(host, device))


def test_beyond_the_parts_the_sum_is_still_correctly_rounded():
    """Values spanning more bits than the parts hold (1e-12 to 1e6, subnormals): the first part is still
    the correctly rounded sum, the parts' total within 2^-158 of the exact one."""
    v = _values(5, low=-12)
    v[:3] = np.float32(1e-40), np.float32(-3e-42), np.float32(2.0**-149)
    sums, squares = exact_sums(v)
    exact = sum(Fraction(float(x)) for x in v)
    exact_sq = sum(Fraction(float(x)) ** 2 for x in v)
    assert sums[0] == math.fsum(v.astype(np.float64)) and squares[0] == math.fsum(v.astype(np.float64) ** 2)
    assert abs(sum(Fraction(p) for p in sums) - exact) <= abs(exact) * Fraction(1, 2**158)
    assert abs(sum(Fraction(p) for p in squares) - exact_sq) <= exact_sq * Fraction(1, 2**158)


def test_not_finite_is_none():
    v = _values(3)
    v[7] = np.inf
    assert exact_sums(v) is None
    v[7] = np.nan
    assert exact_sums(v) is None


def _tiles(image: np.ndarray, side: int) -> list[dict]:
    from bragg_dask.physics.sums import with_exact_sums

    out = []
    for s0 in range(0, image.shape[0], side):
        for f0 in range(0, image.shape[1], side):
            t = image[s0 : s0 + side, f0 : f0 + side].astype(np.float64)
            partial = {"sum": float(t.sum()), "sumsq": float((t * t).sum()), "n": t.size, "max": 0.0, "argmax": None}
            out.append(with_exact_sums(partial, image[s0 : s0 + side, f0 : f0 + side]))
    return out


def test_the_statistics_are_the_same_bits_for_any_tiling():
    """Tiles of 7, 16, 33 and 96 pixels: the same mean, rms and rmsd, the correctly rounded ones; the
    plain float64 sums per tile, added in tile order, are not (so the test can tell)."""
    rng = np.random.default_rng(4)
    image = (rng.gamma(0.3, 2.0, (96, 96)) * 10.0 ** rng.uniform(-6, 3, (96, 96))).astype(np.float32)
    stats = {side: combine(_tiles(image, side), image.size) for side in (7, 16, 33, 96)}
    first = stats[7]
    assert all((s.mean, s.rms, s.rmsd) == (first.mean, first.rms, first.rmsd) for s in stats.values())
    assert first.mean == math.fsum(image.astype(np.float64).ravel()) / image.size
    plain = {
        side: sum(p["sum"] for p in _tiles(image, side)) for side in (7, 16, 33, 96)
    }  # what the tiles' float sums give
    assert len(set(plain.values())) > 1
