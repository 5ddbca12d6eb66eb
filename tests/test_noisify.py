"""``bragg-dask noisify``: noisify's detector response (PSF, gain, ADC, clip, noise), golden cases,
tile-parallel PSF, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bragg_dask.cli.noisify import noisify_main
from bragg_dask.detector import psf as P
from bragg_dask.detector.adu import adu_noiseless, adu_noisy, gaussian, photon_counts
from bragg_dask.detector.flags import parse_args
from bragg_dask.errors import ConfigError, UsageError

GOLDEN = Path(__file__).parent / "data" / "golden_noisify"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "case.json").is_file())
CLI = [sys.executable, "-m", "bragg_dask", "noisify"]


def read_img(path, shape, bits):
    raw = Path(path).read_bytes()
    return np.frombuffer(raw[512:], dtype="<u2" if bits == 16 else "<u4")[: shape[0] * shape[1]].reshape(shape)


def run_in(folder, args: list[str]) -> list[str]:
    """``noisify_main(args)`` run from ``folder`` (noisify's relative file names)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return noisify_main(args)
    finally:
        os.chdir(cwd)


def run_case(case_dir: Path, tmp_path: Path, parity: str) -> tuple[np.ndarray, dict]:
    spec = json.loads((case_dir / "case.json").read_text())
    shutil.copy(case_dir / "float.bin", tmp_path / "float.bin")
    written = run_in(tmp_path, spec["args"] + ["--parity", parity])
    assert written == ["int.img"]
    return read_img(tmp_path / "int.img", (spec["spixels"], spec["fpixels"]), spec["bits"]), spec


# ---- golden cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("parity", ["spec", "c"])
@pytest.mark.parametrize("case", CASES)
def test_golden_case_within_one_adu(case, parity, tmp_path):
    got, spec = run_case(GOLDEN / case, tmp_path, parity)
    ref_name = "int.img" if parity == "c" else "int_spec.img"
    ref = read_img(GOLDEN / case / ref_name, got.shape, spec["bits"])
    diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= got.size // 100  # off by one only at float rounding edges
    # noisify's own header, byte for byte
    assert (tmp_path / "int.img").read_bytes()[:512] == (GOLDEN / case / ref_name).read_bytes()[:512]


@pytest.mark.parametrize("parity", ["spec", "c"])
def test_tiled_run_writes_the_same_image(parity, tmp_path):
    case = GOLDEN / "psf_fiber_r9_nonsquare"
    (tmp_path / "whole").mkdir()
    (tmp_path / "tiled").mkdir()
    run_case(case, tmp_path / "whole", parity)
    spec = json.loads((case / "case.json").read_text())
    shutil.copy(case / "float.bin", tmp_path / "tiled")
    run_in(tmp_path / "tiled", spec["args"] + ["--parity", parity, "--tile", "7"])
    assert (tmp_path / "tiled" / "int.img").read_bytes() == (tmp_path / "whole" / "int.img").read_bytes()


def test_golden_parities_differ_where_the_references_do(tmp_path):
    case = GOLDEN / "psf_fiber_r9_nonsquare"
    (tmp_path / "s").mkdir()
    (tmp_path / "c").mkdir()
    spec_img, _ = run_case(case, tmp_path / "s", "spec")
    c_img, _ = run_case(case, tmp_path / "c", "c")
    differ = spec_img != c_img
    assert differ.any()
    assert not differ[:, 1:].any()  # the wrap reaches only the first column
    assert not differ[0].any()


# ---- the PSF -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,fwhm", [("gauss", 1.5), ("fiber", 0.8)])
def test_photons_are_conserved_far_from_the_edges(kind, fwhm):
    psf = P.PSF(kind, fwhm, 30, 101)
    img = torch.zeros(101, 101, dtype=torch.float64)
    img[50, 50] = 1000.0
    out = P.apply_psf(psf, img)
    # kernel (disc of pixels) + analytic tail (beyond the circle) is the whole PSF, up to the disc's
    # pixelated edge
    assert float(out.sum()) == pytest.approx(1000.0, rel=2e-3)
    assert float(out[50, 50]) == pytest.approx(float(out.max()))
    assert torch.allclose(out, out.flip(0)) and torch.allclose(out, out.T)


def test_gauss_kernel_is_the_pixel_integral():
    psf = P.PSF("gauss", 2.0, 3, 10)
    k = P.kernel(psf, 3)
    c = math.sqrt(P.LN16) / 2.0

    def one(d):
        return 0.5 * (math.erf(c * (d + 0.5)) - math.erf(c * (d - 0.5)))

    assert float(k[3, 3]) == pytest.approx(one(0) ** 2, rel=1e-14)
    assert float(k[3 + 1, 3 + 2]) == pytest.approx(one(1) * one(2), rel=1e-14)
    assert float(k[0, 0]) == 0.0  # corner outside the circle of radius 3


def test_fiber_kernel_sums_to_one_minus_tail_over_a_big_disc():
    psf = P.PSF("fiber", 1.0, 400, 1000)
    k = P.kernel(psf, 400)
    assert float(k.sum()) + float(P.tail_fraction(psf, 400)) == pytest.approx(1.0, abs=2e-3)


def test_c_parity_wraps_the_right_edge_into_the_next_row():
    psf = P.PSF("gauss", 1.2, 2, 9)
    img = torch.zeros(5, 9, dtype=torch.float64)
    img[2, 8] = 100.0  # right edge, middle row
    img[4, 8] = 50.0  # right edge, last row: its wrap falls off
    spec, c = P.apply_psf(psf, img, "spec"), P.apply_psf(psf, img, "c")
    k = P.kernel(psf, 2)
    diff = c - spec
    expect = torch.zeros_like(diff)
    for dy in (-2, -1, 0, 1, 2):  # column x = 9 (dx = +1) of rows 0..4 -> pixel (y+1, 0)
        for y0, v in ((2, 100.0), (4, 50.0)):
            y = y0 + dy
            if 0 <= y < 4:
                expect[y + 1, 0] += v * k[2 + dy, 3]
    assert torch.allclose(diff, expect, atol=1e-12)


def test_automatic_radius():
    psf = P.PSF("gauss", 1.5, None, 100)
    photons = torch.tensor([0.0, 0.005, 0.01, 1.0, 400.0], dtype=torch.float64)
    r = P.auto_radius(psf, photons).tolist()
    assert r[:2] == [1, 1]  # under 0.01 photons: radius 1
    for i in (2, 3, 4):  # noisify's formula where it is defined
        v = float(photons[i])
        assert r[i] == 1 + math.ceil(math.sqrt(-math.log(math.sqrt(v) / 10 / v) / math.log(16)) * 1.5)
    fib = P.PSF("fiber", 1.0, None, 50)
    assert P.auto_radius(fib, torch.tensor([4.0, 1e6])).tolist() == [1 + math.ceil(fib.g * 20), 50]
    # spec mode blurs with per-pixel radii, photons kept (the tails come back evenly)
    img = torch.zeros(40, 40, dtype=torch.float64)
    img[10, 10], img[30, 25], img[5, 30] = 400.0, 2.0, 0.004
    out = P.apply_psf(psf, img)
    assert float(out.sum()) == pytest.approx(float(img.sum()), rel=1e-6)
    with pytest.raises(ConfigError, match="-psf_radius"):
        P.apply_psf(psf, img, "c")


# ---- tile-parallel PSF ---------------------------------------------------------------------------


def _image(kind: str, shape=(23, 31), seed=3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(shape, generator=g, dtype=torch.float64) * 5
    img[torch.rand(shape, generator=g) < 0.05] = 3000.0  # bright spots ...
    img[:, -1] = torch.linspace(0, 2000, shape[0], dtype=torch.float64)  # ... and along the right edge
    img[3, 4] = -7.0  # negative pixels do not spread
    return img.round() if kind == "int" else img


def _tiled(psf, img, tile, parity):
    return P.apply_psf_tiled(psf, img, tile, parity)


@pytest.mark.parametrize("kind", ["float", "int"])
@pytest.mark.parametrize("parity", ["spec", "c"])
@pytest.mark.parametrize("tile", [1, 7, 3, 13, 31])  # radius 5: smaller, larger, whole image
def test_tiled_psf_equals_untiled(tile, parity, kind):
    img = _image(kind)
    for psf in (P.PSF("gauss", 2.0, 5, 31), P.PSF("fiber", 1.0, 5, 31)):
        whole = P.apply_psf(psf, img, parity)
        tiled = _tiled(psf, img, tile, parity)
        assert torch.allclose(tiled, whole, rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(
            adu_noiseless(tiled.numpy(), 1.7, 10, 32), adu_noiseless(whole.numpy(), 1.7, 10, 32)
        )


@pytest.mark.parametrize("tile", [1, 6, 31])
def test_tiled_psf_equals_untiled_with_the_automatic_radius(tile):
    img = _image("float")
    psf = P.PSF("gauss", 1.5, None, 31)
    assert torch.allclose(_tiled(psf, img, tile, "spec"), P.apply_psf(psf, img), rtol=1e-12, atol=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("parity", ["spec", "c"])
def test_psf_on_cuda_equals_cpu(parity):
    img = _image("float", (300, 257))
    for psf in (P.PSF("gauss", 2.0, 5, 300), P.PSF("fiber", 1.0, 20, 300)):
        cpu = P.apply_psf(psf, img, parity)
        gpu = P.apply_psf(psf, img.cuda(), parity)
        assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, rtol=1e-10, atol=1e-8)
        tiled = P.psf_tile(
            psf, lambda a, b, c, d: img.cuda()[a:b, c:d], (64, 128, 0, 64), img.shape, radius=20, parity=parity
        )
        lost = P.lost_photons(psf, img) / img.numel()
        assert torch.allclose(tiled.cpu() + lost, cpu[64:128, 0:64], rtol=1e-10, atol=1e-8)


def test_large_radius_goes_through_the_fft():
    img = _image("float", (40, 50))
    psf = P.PSF("fiber", 1.0, 20, 50)
    k = P.kernel(psf, 20)
    grown = torch.nn.functional.pad(img.clamp(min=0), (20, 20, 20, 20))
    direct = torch.nn.functional.conv2d(grown[None, None], k[None, None])[0, 0]
    assert torch.allclose(P.spread(psf, img, (0, 0, 0, 0)), direct, rtol=1e-10, atol=1e-9)


# ---- the noise path ------------------------------------------------------------------------------


def test_gaussian_deviates_are_standard_normal():
    z = gaussian(7, np.arange(200_000), 3_000_000_000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z**4) - 3) < 0.05


def test_photon_counts_statistics_and_tiling_independence():
    n = 200_000
    idx = np.arange(n)
    mean = np.full(n, 50.0)
    counts = photon_counts(mean, idx, seed=5, calib_seed=9, flicker=0.0, calibration=0.0)
    assert counts.mean() == pytest.approx(50.0, abs=0.1) and counts.var() == pytest.approx(50.0, rel=0.03)
    cal = photon_counts(mean, idx, seed=5, calib_seed=9, flicker=0.0, calibration=0.1)
    assert cal.var() == pytest.approx(50.0 + 25.0, rel=0.04)  # Poisson + (0.1 * 50)^2
    fl = photon_counts(mean, idx, seed=5, calib_seed=9, flicker=0.2, calibration=0.0)
    assert fl.var() == pytest.approx(50.0 + 100.0, rel=0.04)
    part = photon_counts(mean[1000:2000], idx[1000:2000], seed=5, calib_seed=9, flicker=0.2, calibration=0.1)
    whole = photon_counts(mean, idx, seed=5, calib_seed=9, flicker=0.2, calibration=0.1)
    np.testing.assert_array_equal(part, whole[1000:2000])


def test_calibration_error_is_the_same_from_shot_to_shot():
    idx = np.arange(50_000)
    mean = np.full(idx.size, 1e6)  # Poisson's spread (0.1 %) far below the calibration's (5 %)
    a = photon_counts(mean, idx, seed=1, calib_seed=42, flicker=0.0, calibration=0.05)
    b = photon_counts(mean, idx, seed=2, calib_seed=42, flicker=0.0, calibration=0.05)
    assert np.corrcoef(a, b)[0, 1] > 0.99
    c = photon_counts(mean, idx, seed=1, calib_seed=43, flicker=0.0, calibration=0.05)
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.05


def test_readout_noise_and_clipping():
    idx = np.arange(100_000)
    adu, over = adu_noisy(np.full(idx.size, 100.0), idx, seed=3, gain=2.0, adc=40.0, readout=3.0, bits=32)
    assert adu.dtype == np.uint32 and over == 0
    assert adu.mean() == pytest.approx(239.5, abs=0.1) and adu.std() == pytest.approx(3.0, rel=0.03)
    adu16, over16 = adu_noisy(np.array([1e5, 10.0]), np.arange(2), seed=3, gain=1.0, adc=0.0, readout=0.0, bits=16)
    assert adu16.tolist() == [65535, 10] and over16 == 1
    adu32, _ = adu_noisy(np.array([1e5]), np.arange(1), seed=3, gain=1.0, adc=0.0, readout=0.0, bits=32)
    assert adu32.tolist() == [100000]  # the noisy 32-bit image is not clipped at 65535 ...
    assert adu_noiseless(np.array([1e5]), 1.0, 0.0, 32).tolist() == [65535]  # ... the noiseless one is


def test_noise_run_writes_noisify_files(tmp_path):
    img = np.full((20, 30), 100.0, dtype=np.float32)
    img.tofile(tmp_path / "f.bin")
    args = [
        "-floatfile",
        "f.bin",
        "-detpixels_x",
        "30",
        "-detpixels_y",
        "20",
        "-seed",
        "4",
        "-psf",
        "gauss",
        "-psf_fwhm",
        "100",
        "-psf_radius",
        "3",
        "-calibration",
        "0",
        "-adc",
        "40",
    ]
    written = run_in(tmp_path, args)
    first = (tmp_path / "noiseimage.img").read_bytes()
    run_in(tmp_path, args)
    again = (tmp_path / "noiseimage.img").read_bytes()
    run_in(tmp_path, args[:7] + ["5"] + args[8:])
    assert (tmp_path / "noiseimage.img").read_bytes() != first  # another seed, another image
    assert written == ["intimage.img", "image.pgm", "noiseimage.img"]
    assert again == first  # a seed gives the same image
    noiseless = read_img(tmp_path / "intimage.img", (20, 30), 16)
    assert (noiseless == 140).all()  # the PSF blurs only the noisy image, as noisify
    noisy = read_img(tmp_path / "noiseimage.img", (20, 30), 16).astype(float)
    # interior (the edges lose photons past the image), truncation takes half an ADU on average
    assert noisy[4:-4, 4:-4].mean() == pytest.approx(139.5, abs=1.5)
    assert (tmp_path / "image.pgm").read_bytes().startswith(b"P5\n30 20\n# pixels scaled by 1\n255\n")


def test_a_time_based_seed_is_reported_and_reproduces_the_image(tmp_path):
    """Without -seed the file mode reports its time-based seed on stdout; -seed N with it gives the same
    noise image."""
    img = np.full((12, 16), 50.0, dtype=np.float32)
    img.tofile(tmp_path / "f.bin")
    args = ["noisify", "-floatfile", "f.bin", "-detpixels_x", "16", "-detpixels_y", "12", "-nopgm"]
    p = subprocess.run(
        [sys.executable, "-m", "bragg_dask", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    seeds = [int(ln.split()[-1]) for ln in p.stdout.splitlines() if ln.startswith("noise seed ")]
    assert len(seeds) == 1
    first = (tmp_path / "noiseimage.img").read_bytes()
    run_in(tmp_path, args[1:] + ["-seed", str(seeds[0])])
    assert (tmp_path / "noiseimage.img").read_bytes() == first


def test_header_import_sets_the_detector_and_is_written_as_it_is(tmp_path):
    case = GOLDEN / "psf_fiber_r9_nonsquare"
    spec = json.loads((case / "case.json").read_text())
    args, drop = [], {"-detpixels_x", "-detpixels_y", "-pixel"}
    it = iter(spec["args"])
    for a in it:
        if a in drop:
            next(it)
        else:
            args.append(a)
    head = bytearray((case / "int.img").read_bytes()[:512])
    head[-20:-1] = b"# imported header  "[:19]  # the padding: it must come back as it is
    (tmp_path / "hdr.img").write_bytes(bytes(head) + bytes(2 * 200 * 160))
    shutil.copy(case / "float.bin", tmp_path)
    run_in(tmp_path, args + ["-header", "hdr.img", "--parity", "c"])
    out = (tmp_path / "int.img").read_bytes()
    assert out[:512] == bytes(head)
    got = read_img(tmp_path / "int.img", (160, 200), 32).astype(np.int64)
    assert np.abs(got - read_img(case / "int.img", (160, 200), 32)).max() <= 1  # pixel 0.172 from the header


# ---- flags and bad input -------------------------------------------------------------------------


def test_flag_spellings_and_positional_float_file():
    o = parse_args(["my_floatimage.bin", "-psf_rad", "3", "-readout_noise", "2", "-psf_size", "60", "-bits", "32"])
    assert o["floatfile"] == "my_floatimage.bin" and o["psf_radius"] == 3 and o["readout"] == 2
    assert o["psf_fwhm"] == 60 and o["bits"] == 32
    with pytest.raises(UsageError, match="-frobnicate"):
        parse_args(["-floatfile", "x", "-frobnicate"])


def test_detector_shape_as_noisify_finds_it():
    from bragg_dask.cli.noisify import detector_shape

    o = {"floatfile": "f.bin"}
    assert detector_shape(o, 12) == (4, 3)  # the most square factorisation, (slow, fast)
    assert detector_shape(o, 7) == (7, 1)
    assert detector_shape(dict(o, detpixels_x=6), 12) == (2, 6)
    assert detector_shape(dict(o, detpixels_y=6), 12) == (6, 2)
    assert detector_shape(dict(o, detpixels=5), 25) == (5, 5)
    with pytest.raises(ConfigError, match="-floatfile"):
        detector_shape(dict(o, detpixels_x=5), 12)


def _cli(args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    "extra,flag",
    [
        (["-psf", "lorentz", "-psf_radius", "3"], "-psf"),
        (["-psf", "gauss", "-psf_fwhm", "-5", "-psf_radius", "3"], "-psf_fwhm"),
        (["-psf", "gauss", "-psf_radius", "-2"], "-psf_radius"),
        (["-bits", "8"], "-bits"),
        (["-detpixels_x", "7"], "-floatfile"),
        (["-psf", "fiber", "--parity", "c"], "-psf_radius"),
        (["-scale", "lots"], "-scale"),
        (["--tile", "0"], "--tile"),
        (["-header", "missing.img"], "-header"),
    ],
)
def test_bad_input_is_one_line_exit_2(extra, flag, tmp_path):
    np.ones((10, 12), dtype=np.float32).tofile(tmp_path / "f.bin")
    p = _cli(["-floatfile", "f.bin", "-detpixels_x", "12", "-nonoise"] + extra, tmp_path)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bragg-dask: error:") and flag in lines[0], p.stderr
    assert not (tmp_path / "intimage.img").exists()


def test_cli_runs_a_golden_case(tmp_path):
    case = GOLDEN / "psf_gauss_radius4_gain"
    spec = json.loads((case / "case.json").read_text())
    shutil.copy(case / "float.bin", tmp_path)
    p = _cli(spec["args"] + ["--parity", "c"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "wrote int.img"
    got = read_img(tmp_path / "int.img", (spec["spixels"], spec["fpixels"]), 32).astype(np.int64)
    assert np.abs(got - read_img(case / "int.img", got.shape, 32)).max() <= 1


# ---- differential check against the C program (where its build is present) -----------------------


C_REF = Path(__file__).parent / "data" / "noisify_c"  # made by the C program noisify: see its README.md


@pytest.mark.parametrize(
    "psf,fwhm,radius,bits", [("gauss", "120", "4", "16"), ("fiber", "80", "7", "32"), ("gauss", "250", "2", "32")]
)
def test_differential_against_noisify(psf, fwhm, radius, bits, tmp_path):
    """The C program's int images of a spotty float image through each PSF (tests/data/noisify_c): the
    header byte for byte, every pixel within one count (the C program's float rounding)."""
    name = f"int_{psf}_{fwhm}_{radius}_{bits}.img"
    args = json.loads((C_REF / "commands.json").read_text())[name]
    shutil.copy(C_REF / "spots_37x45.bin", tmp_path / "float.bin")
    assert np.array_equal(
        np.fromfile(tmp_path / "float.bin", "<f4").reshape(37, 45),
        _image("float", (37, 45), seed=11).clamp(min=0).numpy().astype(np.float32),
    )
    run_in(tmp_path, args + ["--parity", "c"])
    ref_raw, got_raw = (C_REF / name).read_bytes(), (tmp_path / name).read_bytes()
    assert got_raw[:512] == ref_raw[:512]
    ref = read_img(C_REF / name, (37, 45), int(bits)).astype(np.int64)
    got = read_img(tmp_path / name, (37, 45), int(bits)).astype(np.int64)
    assert np.abs(got - ref).max() <= 1 and np.count_nonzero(ref - ref.min()) > 100


def test_noise_statistics_match_noisify(tmp_path):
    """A flat image with readout and flicker noise through a PSF: the noise image's mean and spread as the
    C program's (its generator's stream differs), its int image byte for byte."""
    args = json.loads((C_REF / "commands.json").read_text())["noise_flat.img int_flat.img"]
    np.full((200, 200), 100.0, dtype=np.float32).tofile(tmp_path / "flat.bin")
    run_in(tmp_path, args)
    ref = read_img(C_REF / "noise_flat.img", (200, 200), 16)[10:-10, 10:-10].astype(float)
    got = read_img(tmp_path / "noise_flat.img", (200, 200), 16)[10:-10, 10:-10].astype(float)
    assert got.mean() == pytest.approx(ref.mean(), abs=0.2)
    assert got.std() == pytest.approx(ref.std(), rel=0.03)
    assert (tmp_path / "int_flat.img").read_bytes() == (C_REF / "int_flat.img").read_bytes()
