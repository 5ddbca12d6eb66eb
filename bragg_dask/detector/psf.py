"""The detector's point-spread function (noisify's ``-psf gauss|fiber``), whole-image or tile by tile.

Each source pixel's photons are spread over the pixels within ``radius`` of it (the PSF integrated
over each receiving pixel, inside the circle of that radius); what falls beyond the radius (the
PSF's tail, an analytic fraction per source pixel) is summed over the image and added back evenly to
every pixel.  Only source pixels with positive photons spread.

``spec`` parity drops contributions outside the image.  ``c`` parity reproduces noisify's
off-by-one bounds: a contribution one column past the right edge (``x == xpixels``) lands on the
first pixel of the next row, and for the last row falls off.

Automatic radius (``radius=None``, spec only): a pixel of ``I`` photons spreads to the radius beyond
which its tail is a tenth of its Poisson noise, ``sqrt(I)/10``; pixels under 0.01 photons (where
that tail exceeds the photons) use radius 1 and keep their photons (their tail is added back).

Shapes: images ``(S, F)`` (slow, fast), float64 tensors on any device.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as tF

from bragg_dask.errors import ConfigError
from bragg_dask.physics.backends import native

LN16 = math.log(16.0)
#: fibre PSF g (pixels) per FWHM (pixels): g/(2 pi) (g^2 + r^2)^(-3/2) falls to half at r = FWHM/2
FIBER_G_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 ** (2.0 / 3.0) - 1.0))
_NOISE_FRACTION = 10.0  # the tail left beyond the automatic radius: sqrt(I) / this
_AUTO_FLOOR = 0.01  # photons: below, the automatic radius is 1
_CONV2D_MAX_RADIUS = 12  # larger kernels go through the FFT (off the C library's path)
_NATIVE_MAX_RADIUS = 24  # the C library's gather up to this radius on CPU; the FFT is cheaper above


@dataclasses.dataclass(frozen=True)
class PSF:
    """A PSF: ``kind`` "gauss" or "fiber", ``fwhm_px`` (pixels), ``radius`` (pixels; None: automatic),
    ``max_radius`` (the cap: the image's larger side)."""

    kind: str
    fwhm_px: float
    radius: int | None
    max_radius: int

    def __post_init__(self) -> None:
        if self.kind not in ("gauss", "fiber"):
            raise ConfigError(f"unknown PSF type {self.kind!r} (gauss or fiber)", flag="-psf")
        if not self.fwhm_px > 0:
            raise ConfigError(f"FWHM must be > 0, got {self.fwhm_px:g} pixels", flag="-psf_fwhm")
        if self.radius is not None and self.radius < 1:
            raise ConfigError(f"must be >= 1 pixel, got {self.radius}", flag="-psf_radius")

    @property
    def g(self) -> float:
        return self.fwhm_px * FIBER_G_PER_FWHM

    def halo_radius(self, max_photons: float) -> int:
        """The largest radius any pixel uses, given the image's largest value (photons)."""
        if self.radius is not None:
            return min(self.radius, self.max_radius)
        return int(auto_radius(self, torch.tensor([max(max_photons, 0.0)], dtype=torch.float64))[0])


def auto_radius(psf: PSF, photons: torch.Tensor) -> torch.Tensor:
    """The automatic radius (int64 pixels, >= 1, capped) of pixels holding ``photons`` ``(...)``."""
    p = photons.to(torch.float64).clamp(min=_AUTO_FLOOR)
    tail = p.sqrt() / _NOISE_FRACTION  # the photons allowed beyond the radius
    if psf.kind == "gauss":
        r = 1 + torch.ceil(torch.sqrt(-torch.log(tail / p) / LN16) * psf.fwhm_px)
    else:
        r = 1 + torch.ceil(psf.g * p / tail)
    r = torch.where(photons < _AUTO_FLOOR, torch.ones_like(r), r)
    return r.clamp(1, psf.max_radius).to(torch.int64)


def kernel(psf: PSF, radius: int, device=None) -> torch.Tensor:
    """:func:`make_kernel`, cached for the radii of the C library's gather (small kernels, asked for
    again for every tile); larger ones (up to the image's size) are made each time."""
    if radius <= _NATIVE_MAX_RADIUS:
        return _cached_kernel(psf, radius, device)
    return make_kernel(psf, radius, device)


def _gather_library(radius: int, device):
    """The C library whose gather spreads with kernels up to ``radius`` on ``device``, or None (not
    CPU, a radius above its limit, no library)."""
    if torch.device(device).type != "cpu" or radius > _NATIVE_MAX_RADIUS:
        return None
    return native.detector_library()


def tiling_exact(psf: PSF, halo_radius: int, device) -> bool:
    """Whether the spread of any window is, bit for bit, the same whatever window holds a pixel's
    sources (the C library's gather: CPU, every radius up to ``halo_radius`` within its limit); else
    the same up to rounding (conv2d, the FFT)."""
    return _gather_library(halo_radius, device) is not None


@functools.lru_cache(maxsize=64)
def _cached_kernel(psf: PSF, radius: int, device=None) -> torch.Tensor:
    return make_kernel(psf, radius, device)


def make_kernel(psf: PSF, radius: int, device=None) -> torch.Tensor:
    """The PSF integrated over each pixel of the ``(2r+1, 2r+1)`` window (``[dy, dx]``), zero outside
    the circle of radius ``r``: float64, computed from ``|dy|, |dx|`` so that it is symmetric in both
    axes bit for bit (what the C library's gather relies on).  :func:`kernel` caches small ones: do not
    modify it."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device).abs()  # symmetric, bit for bit
    if psf.kind == "gauss":  # separable: the 1-D Gaussian's integral over [d - 1/2, d + 1/2]
        c = math.sqrt(LN16) / psf.fwhm_px
        one = 0.5 * (torch.erf(c * (d + 0.5)) - torch.erf(c * (d - 0.5)))
        k = one[:, None] * one[None, :]
    else:  # the fibre PSF's cumulative integral over the quadrant [0,x] x [0,y], at the four corners
        g = psf.g

        def cum(x, y):
            return torch.atan(x * y / (g * torch.sqrt(g * g + x * x + y * y))) / (2 * math.pi)

        y, x = d[:, None], d[None, :]
        k = cum(x + 0.5, y + 0.5) - cum(x + 0.5, y - 0.5) - cum(x - 0.5, y + 0.5) + cum(x - 0.5, y - 0.5)
    inside = (d[:, None] ** 2 + d[None, :] ** 2) <= radius * radius
    return torch.where(inside, k, torch.zeros_like(k))


def tail_fraction(psf: PSF, radius: torch.Tensor | int) -> torch.Tensor:
    """The fraction of a pixel's photons beyond ``radius`` (pixels): float64, shaped as ``radius``."""
    r = torch.as_tensor(radius, dtype=torch.float64)
    if psf.kind == "gauss":
        return torch.exp(-LN16 * (r / psf.fwhm_px) ** 2)
    return psf.g / torch.sqrt(psf.g * psf.g + r * r)


def radii(psf: PSF, photons: torch.Tensor) -> torch.Tensor:
    """Every pixel's radius ``(S, F)`` int64 (the given one, or automatic)."""
    if psf.radius is not None:
        return torch.full(photons.shape, min(psf.radius, psf.max_radius), dtype=torch.int64, device=photons.device)
    return auto_radius(psf, photons)


def lost_photons(psf: PSF, photons: torch.Tensor) -> float:
    """The photons of ``photons`` ``(S, F)`` (an image or a tile of one: the sums add up) that fall
    beyond their radius."""
    src = photons.to(torch.float64).clamp(min=0.0)
    if psf.radius is not None:  # one radius: its tail fraction times the photons
        return float(src.sum()) * float(tail_fraction(psf, min(psf.radius, psf.max_radius)))
    return float((src * tail_fraction(psf, radii(psf, photons))).sum())


def spread(psf: PSF, photons: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """The photons of ``photons`` ``(H, W)`` spread by the PSF onto the window grown by ``pad`` =
    (left, right, top, bottom) pixels and shrunk by the halo radius: for a window holding the
    sources within ``R`` of an output region, ``pad = (-R, -R, -R, -R)`` gives that region."""
    src = photons.to(torch.float64).clamp(min=0.0)
    r_of = radii(psf, photons) if psf.radius is None else None
    out = None
    for r in torch.unique(r_of).tolist() if r_of is not None else [min(psf.radius or 0, psf.max_radius)]:
        part = src if r_of is None else torch.where(r_of == r, src, torch.zeros_like(src))
        if not bool((part > 0).any()):
            continue
        k = kernel(psf, int(r), src.device)
        grow = tuple(int(p) + int(r) for p in pad)
        grown = tF.pad(part, grow) if any(grow) else part  # negative pads crop
        y = _correlate(grown, k)
        out = y if out is None else out + y
    if out is None:
        h, w = photons.shape
        out = torch.zeros(h + pad[2] + pad[3], w + pad[0] + pad[1], dtype=torch.float64, device=photons.device)
    return out


def _correlate(image: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid-mode 2-D correlation of ``image`` ``(H, W)`` with the symmetric kernel ``k`` ``(n, n)``."""
    n = k.shape[0]
    h, w = image.shape
    if h < n or w < n:
        return image.new_zeros(max(h - n + 1, 0), max(w - n + 1, 0))
    r = (n - 1) // 2
    lib = _gather_library(r, image.device)
    if lib is not None and _symmetric(k):
        return _correlate_native(lib, image, k)
    if r <= _CONV2D_MAX_RADIUS:
        return tF.conv2d(image[None, None], k[None, None])[0, 0]
    fh, fw = h, w  # circular FFT correlation of size (h, w); the valid part does not wrap
    spec = torch.fft.rfft2(image) * torch.fft.rfft2(torch.flip(k, (0, 1)), s=(fh, fw))
    return torch.fft.irfft2(spec, s=(fh, fw))[n - 1 :, n - 1 :]


def _symmetric(k: torch.Tensor) -> bool:
    """Whether ``k`` ``(n, n)`` is unchanged, bit for bit, by flipping either axis."""
    return bool(torch.equal(k, torch.flip(k, (0,))) and torch.equal(k, torch.flip(k, (1,))))


def _correlate_native(lib, image: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """:func:`_correlate` by the C library (``native_detector.c``), rows split over threads: each
    output pixel a gather in a fixed order, so the same bits for any window holding its sources."""
    n = k.shape[0]
    r = (n - 1) // 2
    src = image.to(dtype=torch.float64).contiguous()
    quad = k[r:, r:].to(dtype=torch.float64).contiguous()  # the quadrant: the kernel is symmetric
    h, w = src.shape
    out = torch.empty(h - 2 * r, w - 2 * r, dtype=torch.float64)

    def rows(y0: int, y1: int) -> None:
        ip = np.array([h, w, r, y0, y1], dtype=np.int64)
        lib.psf_correlate(ip.ctypes.data, src.data_ptr(), quad.data_ptr(), out.data_ptr())

    native.run_threaded(rows, out.shape[0], max(1, 65536 // max(out.shape[1], 1)))
    return out


def apply_psf(psf: PSF, photons: torch.Tensor, parity: str = "spec") -> torch.Tensor:
    """The whole image ``(S, F)`` blurred: spread (and, with ``parity="c"``, the right-edge wrap),
    plus the lost photons evenly."""
    if psf.radius is None and parity == "c":
        raise ConfigError(
            "the automatic radius is undefined in noisify (it crashes); give a radius", flag="-psf_radius"
        )
    S, F = photons.shape
    out = spread(psf, photons, (0, 1 if parity == "c" else 0, 0, 0))
    if parity == "c":
        out = _wrap(out, F)
    return out + lost_photons(psf, photons) / (S * F)


def _wrap(extended: torch.Tensor, fpixels: int) -> torch.Tensor:
    """``(S, F+1)`` -> ``(S, F)``: column F of row y added to pixel (y+1, 0); the last row's is lost."""
    out = extended[:, :fpixels].clone()
    out[1:, 0] += extended[:-1, fpixels]
    return out


# ---- tiles ---------------------------------------------------------------------------------------


def halo(tile: tuple[int, int, int, int], radius: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The tile ``(s0, s1, f0, f1)`` grown by ``radius``, clipped to the image ``shape`` (S, F)."""
    s0, s1, f0, f1 = tile
    S, F = shape
    return max(s0 - radius, 0), min(s1 + radius, S), max(f0 - radius, 0), min(f1 + radius, F)


def wrap_halo(tile: tuple[int, int, int, int], radius: int, shape: tuple[int, int]):
    """c parity: the window whose spread lands past the right edge of the rows before a tile that
    holds column 0 (the right edge's ``radius`` columns, rows ``s0-1-r .. s1-1+r``), or None."""
    s0, s1, f0, f1 = tile
    S, F = shape
    if f0 != 0 or s1 - 1 < 1:
        return None
    return max(s0 - 1 - radius, 0), min(s1 - 1 + radius, S), max(F - radius, 0), F


def psf_tile(
    psf: PSF, read, tile: tuple[int, int, int, int], shape: tuple[int, int], *, radius: int, parity: str = "spec"
) -> torch.Tensor:
    """The spread (no lost photons: add ``lost_photons`` summed over tiles / pixels) on one tile.

    ``read(s0, s1, f0, f1)`` returns that window of the photon image; ``tile`` = (s0, s1, f0, f1);
    ``radius``: the halo radius (:meth:`PSF.halo_radius` of the image's maximum).  Equals the
    whole-image :func:`spread` (and wrap) on the tile."""
    s0, s1, f0, f1 = tile
    hs0, hs1, hf0, hf1 = halo(tile, radius, shape)
    out = spread(psf, read(hs0, hs1, hf0, hf1), (hf0 - f0, f1 - hf1, hs0 - s0, s1 - hs1))
    w = wrap_halo(tile, radius, shape) if parity == "c" else None
    if w is not None:  # column F of rows max(s0-1, 0) .. s1-2 -> column 0 of rows max(s0, 1) .. s1-1
        ws0, ws1, wf0, wf1 = w
        r0 = max(s0 - 1, 0)
        col = spread(psf, read(ws0, ws1, wf0, wf1), (0, shape[1] + 1 - wf1, ws0 - r0, (s1 - 1) - ws1))
        out[max(s0, 1) - s0 :, 0] += col[:, -1]
    return out


def psf_tile_adu16(
    psf: PSF,
    fill,
    tile: tuple[int, int, int, int],
    shape: tuple[int, int],
    *,
    radius: int,
    add: float,
    gain: float,
    adc: float,
) -> tuple[np.ndarray, int] | None:
    """``psf_tile`` (spec parity) ``+ add``, then ``(v * gain + adc)`` clipped to 16 bits as
    ``adu.to_adu`` (without readout noise) make it, in one pass of the C
    library: ``(uint16 (rows, cols), overloads)`` bit for bit those, or None where the library does not
    apply (an automatic radius, no library, a radius above its limit).

    ``fill(out, s0, s1, f0, f1)`` writes that window of the photon image, clamped at zero, into the
    float64 array ``out``."""
    lib = _gather_library(radius, "cpu")
    if lib is None or psf.radius is None:
        return None
    r = min(psf.radius, psf.max_radius)
    s0, s1, f0, f1 = tile
    hs0, hs1, hf0, hf1 = halo(tile, radius, shape)
    buf = np.zeros((s1 - s0 + 2 * r, f1 - f0 + 2 * r))
    top, left = hs0 - (s0 - r), hf0 - (f0 - r)
    fill(buf[top : top + hs1 - hs0, left : left + hf1 - hf0], hs0, hs1, hf0, hf1)
    quad = kernel(psf, r)[r:, r:].contiguous()
    out = np.empty((s1 - s0, f1 - f0), dtype=np.uint16)
    dp = np.array([add, gain, adc], dtype=np.float64)
    counts: list[int] = []

    def rows(y0: int, y1: int) -> None:
        ip = np.array([buf.shape[0], buf.shape[1], r, y0, y1], dtype=np.int64)
        over = np.zeros(1, dtype=np.int64)
        lib.psf_adu16(
            ip.ctypes.data, dp.ctypes.data, buf.ctypes.data, quad.data_ptr(), out.ctypes.data, over.ctypes.data
        )
        counts.append(int(over[0]))

    native.run_threaded(rows, out.shape[0], max(1, 65536 // max(out.shape[1], 1)))
    return out, sum(counts)


def apply_psf_tiled(psf: PSF, photons: torch.Tensor, tile: int, parity: str = "spec") -> torch.Tensor:
    """:func:`apply_psf` computed a ``tile`` x ``tile`` tile at a time from each tile's halo (the lost
    photons: the tiles' partial sums)."""
    if psf.radius is None and parity == "c":
        return apply_psf(psf, photons, parity)  # the same one-line refusal
    S, F = photons.shape
    radius = psf.halo_radius(float(photons.max()))
    out = torch.empty(S, F, dtype=torch.float64, device=photons.device)
    lost = 0.0
    for s0 in range(0, S, tile):
        for f0 in range(0, F, tile):
            t = (s0, min(s0 + tile, S), f0, min(f0 + tile, F))
            out[t[0] : t[1], t[2] : t[3]] = psf_tile(
                psf, lambda a, b, c, d: photons[a:b, c:d], t, (S, F), radius=radius, parity=parity
            )
            lost += lost_photons(psf, photons[t[0] : t[1], t[2] : t[3]])
    return out + lost / (S * F)
