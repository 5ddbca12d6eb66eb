"""Poisson noise: the right statistics, the C program's statistics, and independent of tiling."""

from __future__ import annotations

import numpy as np
import pytest

from bragg_dask.detector.noise import noise_image, poisson, uniforms
from bragg_dask.io.smv import read_smv
from bragg_dask.physics.roi import roi_mask

from .conftest import case_by_id, simulate_case

N = 200_000


@pytest.mark.parametrize("lam", [0.05, 3.0, 11.5, 12.0, 80.0, 5000.0, 2.0e6])
def test_equal_mean_pixels_have_poisson_mean_and_variance(lam):
    x = poisson(np.full(N, lam), np.arange(N), seed=2024).astype(np.float64)
    # mean within 5 standard errors; variance within 5 standard errors of a Poisson variance
    assert abs(x.mean() - lam) < 5 * np.sqrt(lam / N)
    var_se = np.sqrt((lam + 2 * lam * lam) / N)  # std. error of the sample variance of a Poisson
    assert abs(x.var() - lam) < 5 * var_se


def test_small_mean_distribution_matches_poisson_pmf():
    lam = 2.5
    x = poisson(np.full(N, lam), np.arange(N), seed=7)
    counts = np.bincount(x, minlength=12)[:8] / N
    k = np.arange(8)
    pmf = np.exp(-lam) * lam**k / np.array([np.prod(np.arange(1, i + 1)) for i in k])
    assert np.allclose(counts, pmf, atol=5 * np.sqrt(pmf / N) + 1e-4)


def test_zero_mean_gives_zero():
    assert (poisson(np.zeros(100), np.arange(100), seed=1) == 0).all()


def test_uniforms_depend_only_on_seed_index_and_draw():
    idx = np.arange(1000)
    a = uniforms(5, idx, 3)
    assert np.array_equal(a[500:], uniforms(5, idx[500:], 3))
    assert not np.array_equal(a, uniforms(6, idx, 3))
    assert not np.array_equal(a, uniforms(5, idx, 4))
    assert ((a > 0) & (a < 1)).all()


def test_noise_matches_the_c_programs_noise_within_sampling_error():
    case = case_by_id("noise_int_scale")
    parsed, res = simulate_case(case)
    out = parsed.outputs
    det = parsed.simulation.detector
    ours, _ = noise_image(res.image, roi_mask(det), seed=out.seed, adc=out.adc, fpixels=det.fpixels)
    _, ref = read_smv(str(case.path / "noise.img"))
    lam = res.image.astype(np.float64)
    lit = lam > 5  # where the standardised residual is near-Gaussian
    for img in (ours, ref):
        counts = img.astype(np.float64) - out.adc
        # the total photon count: Poisson with mean sum(lam)
        assert abs(counts.sum() - lam.sum()) < 5 * np.sqrt(lam.sum())
        # standardised residuals of lit pixels: mean 0, variance 1
        z = (counts[lit] - lam[lit]) / np.sqrt(lam[lit])
        assert abs(z.mean()) < 5 / np.sqrt(lit.sum())
        assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / lit.sum())  # 5 standard errors
    # and the two noise images agree with each other pixel-wise within Poisson scatter
    diff = (ours.astype(np.float64) - ref.astype(np.float64))[lit] / np.sqrt(2 * lam[lit])
    assert abs(diff.mean()) < 5 / np.sqrt(lit.sum())
    assert abs(diff.var() - 1.0) < 5 * np.sqrt(2.0 / lit.sum())


@pytest.mark.parametrize("tile", [1, 7])
def test_noise_is_identical_for_any_tiling(tile):
    case = case_by_id("noise_int_scale")
    parsed, res = simulate_case(case)
    det = parsed.simulation.detector
    in_roi = roi_mask(det)
    whole, _ = noise_image(res.image, in_roi, seed=424242, adc=40.0, fpixels=det.fpixels)
    tiled = np.zeros_like(whole)
    for s0 in range(0, det.spixels, tile):
        for f0 in range(0, det.fpixels, tile):
            sl = (slice(s0, s0 + tile), slice(f0, f0 + tile))
            tiled[sl], _ = noise_image(
                res.image[sl], in_roi[sl], seed=424242, adc=40.0, fpixels=det.fpixels, s0=s0, f0=f0
            )
    assert np.array_equal(whole, tiled)


def test_noise_overloads_are_clipped_and_counted():
    img = np.array([[1e6, 10.0]], dtype=np.float32)
    px, over = noise_image(img, np.ones_like(img, bool), seed=1, adc=40.0)
    assert px[0, 0] == 65535 and over == 1


def test_same_seed_same_noise_other_seed_other_noise():
    img = np.full((32, 32), 50.0, dtype=np.float32)
    roi = np.ones_like(img, bool)
    a, _ = noise_image(img, roi, seed=3, adc=40)
    b, _ = noise_image(img, roi, seed=3, adc=40)
    c, _ = noise_image(img, roi, seed=4, adc=40)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
