"""Azimuthal integration of a store's frame with pyFAI (``pip install bragg-dask[pyfai]``).

The store records its detector as a PONI (:func:`bragg_dask.store.poni`): the same geometry the
simulation used, in pyFAI's terms, so a frame integrates without any calibration step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.store import StoreFrame, check_frames, frame_record, store_metadata

if TYPE_CHECKING:
    import numpy as np


def integrator(store: str):
    """A ``pyFAI`` azimuthal integrator with the store's detector geometry and wavelength."""
    try:
        from pyFAI.detectors import Detector
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    except ImportError:
        raise UsageError("azimuthal integration needs pyFAI: pip install bragg-dask[pyfai]", flag="azimuthal") from None
    geom = store_metadata(store).get("poni")
    if geom is None:
        raise ConfigError(f"{store} records no flat-detector geometry (a curved detector?)", flag="azimuthal")
    cfg = geom["detector_config"]
    det = Detector(pixel1=cfg["pixel1"], pixel2=cfg["pixel2"], max_shape=tuple(cfg["max_shape"]))
    keys = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
    return AzimuthalIntegrator(detector=det, **{k: geom[k] for k in keys})


def azimuthal(store: str, frame: int = 0, npt: int = 1000, unit: str = "q_A^-1") -> tuple[np.ndarray, np.ndarray]:
    """``(radial, intensity)``: frame ``frame`` of the store's float image (photons/pixel) integrated over
    azimuth into ``npt`` bins of ``unit`` (pyFAI's units: ``q_A^-1``, ``2th_deg``, ``r_mm``...)."""
    import numpy as np

    rec = frame_record(store, frame)
    if not rec.complete:
        raise ConfigError(
            f"frame {frame} of {store} is incomplete (re-run the simulation to finish it)", flag="azimuthal"
        )
    check_frames(store, [frame], None, "azimuthal")
    image = np.asarray(StoreFrame(store, frame), dtype=np.float32)
    result = integrator(store).integrate1d(image, npt, unit=unit)
    return np.asarray(result.radial), np.asarray(result.intensity)
