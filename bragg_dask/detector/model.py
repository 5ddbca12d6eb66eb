"""The detector model: what turns photons into counts, frozen and checked once.

:class:`DetectorModel` holds noisify's numbers (scale, fluence, gain, ADC offset, bits, PSF, noise,
readout, flicker, calibration) and the run's choices for them (parity, device, PSF tile).  It is made
once, from noisify's flags (:func:`bragg_dask.detector.flags.model_of`) or from a simulation's
``--psf ...`` options (:func:`bragg_dask.detector.flags.model_from_service`), and handed as an object to
the file pass and to the store pass (:mod:`bragg_dask.detector.pipeline`).  An impossible value is a
:class:`~bragg_dask.errors.ConfigError` naming the field and the flag that set it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from bragg_dask.errors import ConfigError
from bragg_dask.physics.constants import DEFAULT_FLUENCE, R_E_SQR

#: the ranges of the model's numbers: field -> (low, high, low included); every value is also finite
RANGES = {
    "scale": (0.0, 1e30, False),
    "fluence": (0.0, 1e300, False),
    "gain": (0.0, 1e30, False),
    "adc": (-1e9, 1e9, True),
    "psf_fwhm": (0.0, 1e9, True),
    "psf_radius": (0.0, 1e4, True),
    "pixel": (0.0, 1e9, False),
    "readout": (0.0, 1e9, True),
    "flicker": (0.0, 1e3, True),
    "calibration": (0.0, 1e3, True),
    "calib_seed": (-(2**63) + 1, 2**63 - 1, True),
}
PSF_KINDS = ("gauss", "fiber")
SEED_RANGE = (-(2**63) + 1, 2**63 - 1, True)


def range_error(value: float, low: float, high: float, closed: bool) -> str | None:
    """Why ``value`` is outside ``(low, high]`` (``[low, high]`` when ``closed``) or not finite; None if inside."""
    if math.isfinite(value) and (low <= value if closed else low < value) and value <= high:
        return None
    where = (
        f"{'>=' if closed else '>'} {low:g}"
        if value < low or not math.isfinite(value) or value == low
        else f"<= {high:g}"
    )
    return f"must be finite and {where}, got {value:g}"


@dataclasses.dataclass(frozen=True)
class DetectorModel:
    """noisify's detector model.  Units: ``scale`` dimensionless, ``fluence`` photons/m^2, ``gain``
    ADU/photon, ``adc`` ADU, ``psf_fwhm`` micrometres, ``psf_radius`` pixels (0: automatic),
    ``pixel`` millimetres, ``readout`` ADU (rms), ``flicker`` and ``calibration`` fractions (rms).

    ``noise``: the noisy image is made (False: noisify's ``-nonoise``); ``parity``: ``"c"`` reproduces
    noisify's single precision and PSF bounds; ``device``: where the PSF runs; ``tile``: the PSF
    computed that many pixels square at a time (the same image); ``seed``: the noise seed (of a store's
    frame 0; frame ``k``'s is ``seed + k``), None: a time-based one.  ``flags``: field -> the flag that set
    it, as the user typed it (for errors; not part of the model's identity)."""

    scale: float = 1.0
    fluence: float = DEFAULT_FLUENCE
    gain: float = 1.0
    adc: float = 40.0
    bits: int = 16
    psf: str | None = None
    psf_fwhm: float = 46.0
    psf_radius: float = 0.0
    pixel: float = 0.1
    noise: bool = True
    readout: float = 0.0
    flicker: float = 0.0
    calibration: float = 0.03
    calib_seed: int = 123456789
    parity: str = "spec"
    device: str = "cpu"
    tile: int | None = None
    seed: int | None = None
    flags: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)

    def flag(self, name: str) -> str:
        """The flag that set field ``name`` (as typed), else noisify's own spelling."""
        return dict(self.flags).get(name, "-" + name)

    def _error(self, message: str, name: str, flag: str | None = None) -> ConfigError:
        """The error of field ``name``: its message names the flag (as typed); ``.field`` names the field."""
        return ConfigError(message, flag=flag or self.flag(name), field=name, field_in_message=False)

    def __post_init__(self) -> None:
        for name, (low, high, closed) in RANGES.items():
            value = getattr(self, name)
            why = (
                range_error(float(value), low, high, closed)
                if isinstance(value, (int, float))
                else f"must be a number, got {value!r}"
            )
            if why:
                raise self._error(why, name)
        if self.bits not in (16, 32):
            raise self._error(f"16 or 32, got {self.bits}", "bits")
        if self.psf is not None and self.psf not in PSF_KINDS:
            raise self._error(f"unknown PSF type {self.psf!r} (gauss or fiber)", "psf")
        if self.parity not in ("spec", "c"):
            raise self._error(f"spec or c, got {self.parity!r}", "parity", "--parity")
        seed_error = None if self.seed is None else range_error(float(self.seed), *SEED_RANGE)
        if seed_error:
            raise self._error(seed_error, "seed")
        tile_error = None if self.tile is None else range_error(float(self.tile), 1, 2**31 - 1, True)
        if tile_error:
            raise self._error(tile_error, "tile", "--tile")
        if self.parity == "c" and self.blurs and int(self.psf_radius) == 0:
            raise self._error(
                "--parity c needs an explicit radius: noisify's automatic radius is undefined "
                "(the square root of a negative number for pixels under 0.01 photons)",
                "psf_radius",
            )

    @property
    def blurs(self) -> bool:
        """A PSF is applied (noisify skips a zero FWHM)."""
        return self.psf is not None and self.psf_fwhm > 0

    def psf_for(self, shape: tuple[int, int]):
        """The :class:`~bragg_dask.detector.psf.PSF` for an image of ``shape`` (S, F), or None."""
        from bragg_dask.detector.psf import PSF

        if not self.blurs or self.psf is None:
            return None
        fwhm_m = self.psf_fwhm / 1e6
        if self.parity == "c":  # noisify keeps the FWHM in single precision
            fwhm_m = float(np.float32(fwhm_m))
        radius = int(self.psf_radius)  # noisify truncates the radius to an integer; 0 is automatic
        return PSF(self.psf, fwhm_m / (self.pixel / 1000.0), radius or None, max(shape))

    def photons(self, raw: np.ndarray) -> np.ndarray:
        """The photons (float64) of float-image values ``raw`` (photons/pixel before ``scale``); in c parity
        rounded to single precision, as noisify's photon image is."""
        photons = raw.astype(np.float64) * (self.fluence * R_E_SQR * self.scale)
        return photons.astype(np.float32).astype(np.float64) if self.parity == "c" else photons

    def record(self) -> dict:
        """The model as the store records it (noisify's names: what the response depends on)."""
        out: dict[str, str | float | int | bool] = {
            "scale": self.scale,
            "fluence": self.fluence,
            "gain": self.gain,
            "adc": self.adc,
            "bits": self.bits,
        }
        if self.psf is not None:
            out["psf"] = self.psf
        out.update(
            psf_fwhm=self.psf_fwhm,
            psf_radius=self.psf_radius,
            pixel=self.pixel,
            nonoise=not self.noise,
            readout=self.readout,
            flicker=self.flicker,
            calibration=self.calibration,
            calib_seed=self.calib_seed,
            parity=self.parity,
        )
        return out
