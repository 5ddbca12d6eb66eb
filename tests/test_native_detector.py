"""The detector response's C library (``physics/native_detector.c``) and the paths around it.

The PSF gather against torch's conv2d (float64, relative 1e-12), bit for bit the same over any
window and any number of threads; the counter-based uniforms and the small-mean Poisson sampler
number for number those of numpy; without a compiler, everything still works (the torch and numpy
paths).  Also: the kernels are symmetric bit for bit, only lit pixels draw noise (the same counts),
the lgamma table, and a store frame kept whole or read a band at a time gives the same bytes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

from bragg_dask.detector import noise, psf
from bragg_dask.detector.adu import CALIBRATION_DRAW, FLICKER_DRAW, gaussian, photon_counts
from bragg_dask.physics.backends import native
from bragg_dask.physics.backends.toolchain import DEFAULT_TOOLCHAIN

needs_lib = pytest.mark.skipif(native.detector_library() is None, reason="the C library does not build here")


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(h, w, generator=g, dtype=torch.float64) ** 6 * 1000.0
    img[torch.rand(h, w, generator=g) < 0.5] = 0.0  # sparse, like a Bragg image
    return img


@pytest.fixture
def no_library(monkeypatch):
    monkeypatch.setattr(native.DETECTOR, "libs", {DEFAULT_TOOLCHAIN: None})


@pytest.mark.parametrize("kind", ["gauss", "fiber"])
@pytest.mark.parametrize("fwhm", [0.7, 2.0, 5.0])
def test_kernel_is_symmetric_bit_for_bit(kind, fwhm):
    for r in (1, 2, 5, 13, 24):
        k = psf.kernel(psf.PSF(kind, fwhm, r, 100), r)
        assert psf._symmetric(k)
        assert float(k.sum()) <= 1.0 + 1e-12


@needs_lib
@pytest.mark.parametrize("kind", ["gauss", "fiber"])
@pytest.mark.parametrize("r", [1, 2, 3, 7, 12, 17, 24])
def test_native_gather_matches_conv2d(kind, r):
    img = _image(61 + 2 * r, 77 + 2 * r, seed=r)
    k = psf.kernel(psf.PSF(kind, 2.5, r, 200), r)
    want = tF.conv2d(img[None, None], k[None, None])[0, 0]
    got = psf._correlate_native(native.detector_library(), img, k)
    assert got.shape == want.shape
    assert float((got - want).abs().max()) <= 1e-12 * float(want.abs().max())


@needs_lib
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_gather_is_the_same_for_any_window_and_threads(threads):
    lib = native.detector_library()
    img = _image(90, 110, seed=4)
    r = 6
    k = psf.kernel(psf.PSF("fiber", 3.0, r, 200), r)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = psf._correlate_native(lib, img, k)
        torch.set_num_threads(threads)
        for s0, f0 in ((0, 0), (1, 0), (13, 29), (40, 7)):
            part = psf._correlate_native(lib, img[s0:, f0:], k)
            assert torch.equal(part, whole[s0:, f0:])
    finally:
        torch.set_num_threads(old)


def test_correlate_without_the_library_is_conv2d(no_library):
    img = _image(40, 50)
    k = psf.kernel(psf.PSF("gauss", 1.5, 4, 100), 4)
    assert torch.equal(psf._correlate(img, k), tF.conv2d(img[None, None], k[None, None])[0, 0])


@needs_lib
@pytest.mark.parametrize("parity", ["spec", "c"])
def test_apply_psf_tiled_equals_whole_with_the_library(parity):
    img = _image(57, 43, seed=9)
    p = psf.PSF("gauss", 2.0, 5, 57)
    whole = psf.apply_psf(p, img, parity)
    for tile in (1, 4, 7, 64):
        assert torch.equal(psf.apply_psf_tiled(p, img, tile, parity), whole)


@needs_lib
@pytest.mark.parametrize("seed", [0, 1, -3, 2**40 + 11, 2**64 - 1])
def test_native_uniforms_and_poisson_are_numpys(monkeypatch, seed):
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 2**42, size=200_000)
    lam = rng.random(200_000) * noise._SMALL_MEAN
    with_lib = (
        noise.uniforms(seed, idx, 5),
        noise.uniforms(seed, idx, 2**33 + 1),
        noise._poisson_small(lam, idx, seed),
    )
    monkeypatch.setattr(native.DETECTOR, "libs", {DEFAULT_TOOLCHAIN: None})
    assert noise._native() is None
    without = (noise.uniforms(seed, idx, 5), noise.uniforms(seed, idx, 2**33 + 1), noise._poisson_small(lam, idx, seed))
    for a, b in zip(with_lib, without):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_only_lit_pixels_draw_and_the_counts_are_unchanged():
    """The counts equal those of every pixel drawing its flicker and calibration (the former way)."""
    rng = np.random.default_rng(3)
    mean = rng.random((64, 80)) * 30.0
    mean[rng.random(mean.shape) < 0.6] = 0.0
    mean[0, :5] = -1.0  # negative photons count none either way
    idx = np.arange(mean.size, dtype=np.int64).reshape(mean.shape) + 5000
    m = mean * (1.0 + 0.2 * gaussian(11, idx, FLICKER_DRAW)) * (1.0 + 0.05 * gaussian(12, idx, CALIBRATION_DRAW))
    want = noise.poisson(np.clip(m, 0.0, None), idx, 11).astype(np.float64)
    got = photon_counts(mean, idx, seed=11, calib_seed=12, flicker=0.2, calibration=0.05)
    assert np.array_equal(got, want)
    assert np.array_equal(photon_counts(mean, 5000, seed=11, calib_seed=12, flicker=0.2, calibration=0.05), want)
    assert not got[mean <= 0].any()


def test_lgamma_table_is_math_lgamma():
    x = np.concatenate([np.arange(1.0, 40.0), [1.5, 3.25, 9.999, 10.0, 10.5, 1e6]])
    got = noise._lgamma1(x)
    for v, g in zip(x, got):
        if v < 10:
            assert g == math.lgamma(v)
        else:
            assert abs(g - math.lgamma(v)) <= 1e-12 * abs(math.lgamma(v))


@pytest.fixture(scope="module")
def one_frame(tmp_path_factory):
    from .test_noisify_store import SIM, run_cli

    d = tmp_path_factory.mktemp("frame")
    p = run_cli(SIM + ["-nonoise", "--zarr", "one.zarr"], d)
    assert p.returncode == 0, p.stderr
    return d / "one.zarr"


@pytest.mark.parametrize("nonoise", [True, False])
def test_store_frame_kept_whole_or_by_bands_gives_the_same_bytes(one_frame, tmp_path, monkeypatch, nonoise):
    """A frame too large to keep (a tiny memory budget) is read a band at a time: the same arrays."""
    import shutil

    from bragg_dask import store
    from bragg_dask.cli.noisify import noisify_store_main
    from bragg_dask.detector import store_pass as noisify_store

    flags = ["-psf", "gauss", "-psf_fwhm", "500", "-psf_radius", "20", "-seed", "4"]
    flags += ["-nonoise"] if nonoise else ["-readout", "2", "-flicker", "0.1"]
    arrays, kept = [], []
    real = noisify_store._FrameSource.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        kept.append(self.keep_all)

    monkeypatch.setattr(noisify_store._FrameSource, "__init__", spy)
    for budget in (None, "1k"):
        if budget:
            monkeypatch.setenv("BRAGG_DASK_MEMORY_LIMIT", budget)
        path = str(shutil.copytree(one_frame, tmp_path / f"s{budget}.zarr"))
        noisify_store_main(path, flags)
        arrays.append(
            {n: store.read_frame(path, 0, n) for n in (store.INT, store.NOISE) if n in store.image_arrays(path)}
        )
    assert kept == [True, False]
    assert arrays[0].keys() == arrays[1].keys() and store.INT in arrays[0]
    for name in arrays[0]:
        assert arrays[0][name].tobytes() == arrays[1][name].tobytes()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_store_detector_pass_on_cuda_equals_cpu(one_frame, tmp_path):
    """``noisify STORE --device cuda``: the PSF as conv2d on the device; the same ADU as the CPU's C
    gather but where the two roundings straddle an integer (at most 1 ADU, on a handful of pixels)."""
    import shutil

    from bragg_dask import store
    from bragg_dask.cli.noisify import noisify_store_main

    flags = ["-psf", "gauss", "-psf_fwhm", "400", "-psf_radius", "8", "-seed", "2"]
    got = {}
    for device in ("cpu", "cuda"):
        path = str(shutil.copytree(one_frame, tmp_path / f"{device}.zarr"))
        noisify_store_main(path, flags + ["--device", device])
        got[device] = {n: store.read_frame(path, 0, n).astype(int) for n in (store.INT, store.NOISE)}
    for name in (store.INT, store.NOISE):
        diff = np.abs(got["cpu"][name] - got["cuda"][name])
        assert diff.max() <= 1 and np.count_nonzero(diff) <= max(2, diff.size // 10000), name


@needs_lib
def test_native_adu16_is_numpys(monkeypatch):
    from bragg_dask.detector import adu as response

    rng = np.random.default_rng(5)
    x = rng.normal(100.0, 3000.0, size=(300, 200))
    x[0, :6] = [np.nan, np.inf, -np.inf, -0.0, 65535.2, 65494.999999]
    for gain, adc in ((1.0, 40.0), (2.5, 10.0), (0.3, 0.0)):
        got = response.adu_noiseless(x, gain, adc, 16)
        monkeypatch.setattr(native.DETECTOR, "libs", {DEFAULT_TOOLCHAIN: None})
        want = response.adu_noiseless(x, gain, adc, 16)
        monkeypatch.undo()
        assert got.dtype == want.dtype == np.uint16 and np.array_equal(got[:, 1:], want[:, 1:])
        assert got[0, 0] == 0  # NaN: 0 (numpy's cast of NaN is platform-defined)


def test_cached_calibration_factors_are_the_drawn_ones():
    """A band of whole rows (an int first index) takes its calibration factors from a per-process cache
    of every pixel's, shared by the frames of a dataset: the same counts as drawing the lit pixels'."""
    from bragg_dask.detector import adu as response

    rng = np.random.default_rng(8)
    for first in (0, 123_457):
        mean = rng.random((400, 700)) * 20.0
        mean[rng.random(mean.shape) < 0.7] = 0.0
        idx = np.arange(mean.size, dtype=np.int64).reshape(mean.shape) + first
        want = photon_counts(mean, idx, seed=3, calib_seed=77, flicker=0.0, calibration=0.05)
        response._CAL_CACHE.clear()
        assert np.array_equal(photon_counts(mean, first, seed=3, calib_seed=77, flicker=0.0, calibration=0.05), want)
        assert (77, 0.05, first, mean.size) in response._CAL_CACHE  # kept for the next frame
        assert np.array_equal(photon_counts(mean, first, seed=3, calib_seed=77, flicker=0.0, calibration=0.05), want)


@needs_lib
def test_the_c_adu_conversion_is_to_adu():
    """The ADU conversion is written once in Python (``adu.to_adu``) and once in C (``adu_value``, used by
    the library's noiseless image and by its one-pass PSF + ADU): the same integers and the same count of
    overloads as the PSF's values through ``to_adu``."""
    from bragg_dask.detector import adu
    from bragg_dask.detector import psf as P

    rng = np.random.default_rng(11)
    image = rng.gamma(0.4, 3000.0, size=(48, 70))  # a long tail: some pixels overload
    image[20, 30] = 4e6
    psf = P.PSF("gauss", 2.5, 4, 70)
    shape, box, radius = image.shape, (8, 40, 10, 60), 4

    def fill(out, s0, s1, f0, f1):
        np.maximum(image[s0:s1, f0:f1], 0.0, out=out)

    def read(s0, s1, f0, f1):
        return torch.as_tensor(image[s0:s1, f0:f1], dtype=torch.float64)

    for gain, adc, add in ((1.0, 40.0, 0.0), (2.5, 10.0, 0.37), (0.3, -5.0, 1.5)):
        got, overloads = P.psf_tile_adu16(psf, fill, box, shape, radius=radius, add=add, gain=gain, adc=adc)
        values = P.psf_tile(psf, read, box, shape, radius=radius).numpy() + add
        want, want_over = adu.to_adu(values, gain, adc, adu.INT16_MAX)
        assert np.array_equal(got, want.astype(np.uint16)) and overloads == want_over > 0
