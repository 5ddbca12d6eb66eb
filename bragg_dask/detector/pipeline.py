"""The detector response of an image: photons -> [counts] -> PSF -> gain/ADC -> ADU images.

One pipeline, two ways of reading its image:

* the whole image at once (:func:`whole_image`: ``bragg-dask noisify -floatfile ...``);
* bands of rows read from a store's frame, each blurred from its halo
  (:mod:`bragg_dask.detector.store_pass`).

Both go through the same stages: :func:`source` (what the PSF blurs: the photons with ``-nonoise``,
else the counted photons), the PSF, and :func:`adu_images` (the noiseless int image and the noisy one,
by :mod:`bragg_dask.detector.adu`'s one ADU conversion).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bragg_dask.detector.adu import adu_noiseless, adu_noisy, photon_counts
from bragg_dask.detector.model import DetectorModel


@dataclasses.dataclass
class Images:
    """The ADU images of a response: the noiseless int image, the noisy one (None without noise),
    the noisy image's overloads, the noise seed."""

    int_image: np.ndarray
    noise_image: np.ndarray | None
    overloads: int
    seed: int


def source(model: DetectorModel, photons: np.ndarray, index: np.ndarray | int, seed: int) -> np.ndarray:
    """What the PSF blurs (float64, ``photons``' shape): the photons without noise, else their Poisson
    counts after flicker and calibration (``index``: the pixels' global indices, or the first pixel's
    for whole rows)."""
    if not model.noise:
        return photons
    return photon_counts(
        photons,
        index,
        seed=seed,
        calib_seed=int(model.calib_seed),
        flicker=model.flicker,
        calibration=model.calibration,
    )


def adu_images(model: DetectorModel, photons, blurred, index, seed: int, blurred_adu=None) -> Images:
    """The images of ``photons`` and of ``blurred`` (the PSF's output of :func:`source`): without noise the
    int image is ``blurred``'s; with noise the int image is the photons' and the noise image
    ``blurred``'s, with readout noise (``index``: the pixels' global indices, read for it alone).
    ``blurred_adu``: ``(ADU, overloads)`` of ``blurred`` already made (the C library's PSF makes them in
    the same pass), else None; ``photons`` is read only with noise."""
    if blurred_adu is None:
        if model.noise:
            blurred_adu = adu_noisy(
                blurred,
                index if model.readout > 0 else None,
                seed=seed,
                gain=model.gain,
                adc=model.adc,
                readout=model.readout,
                bits=model.bits,
            )
        else:
            blurred_adu = (adu_noiseless(blurred, model.gain, model.adc, model.bits), 0)
    if not model.noise:
        return Images(blurred_adu[0], None, 0, seed)
    noisy, overloads = blurred_adu
    return Images(adu_noiseless(photons, model.gain, model.adc, model.bits), noisy, overloads, seed)


def blur_image(model: DetectorModel, psf, image: np.ndarray) -> np.ndarray:
    """The whole ``image`` (float64 ``(S, F)``) through the PSF (by tiles of ``model.tile`` where set: the
    same image); in c parity rounded to single precision, as noisify's float image is."""
    import torch

    from bragg_dask.detector.psf import apply_psf, apply_psf_tiled

    t = torch.as_tensor(image, dtype=torch.float64, device=model.device)
    if model.tile:
        out = apply_psf_tiled(psf, t, model.tile, model.parity).cpu().numpy()
    else:
        out = apply_psf(psf, t, model.parity).cpu().numpy()
    return out.astype(np.float32).astype(np.float64) if model.parity == "c" else out


def whole_image(model: DetectorModel, raw: np.ndarray, shape: tuple[int, int], seed: int) -> Images:
    """The images of the float image ``raw`` (photons/pixel before ``scale``), read whole; ``shape`` (S, F)."""
    photons = model.photons(raw.reshape(shape))
    psf = model.psf_for(shape)
    index = np.arange(photons.size, dtype=np.int64).reshape(shape)
    blurred = source(model, photons, index, seed)
    if psf is not None:
        blurred = blur_image(model, psf, blurred)
    return adu_images(model, photons, blurred, index, seed)
