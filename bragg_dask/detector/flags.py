"""noisify's command line, and the simulation's ``--psf ...`` options, into a :class:`DetectorModel`.

:func:`parse_args` reads noisify's flags (every spelling it accepts, and ``--parity``, ``--device``,
``--tile``) into the file options of a run, with noisify's defaults; :func:`model_of` makes the
model of them.  :func:`model_from_service` makes the model of a simulation's service flags (``--psf``,
``--readout``, ...) and the simulation's own numbers that mean something for it (``-scale``, ``-adc``,
``-nonoise``, ``--parity``); its errors name the service flag.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bragg_dask.detector.model import RANGES, DetectorModel, range_error
from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.physics.constants import DEFAULT_FLUENCE

log = logging.getLogger(__name__)

VALUE = {  # canonical name -> (spellings, type)
    "floatfile": (("-floatfile", "-floatimage", "-bin"), str),
    "intfile": (("-intfile", "-intimage"), str),
    "noisefile": (("-noisefile", "-noiseimage"), str),
    "pgmfile": (("-pgmfile", "-pgmimage"), str),
    "header": (("-header",), str),
    "scale": (("-scale",), float),
    "fluence": (("-fluence",), float),
    "gain": (("-gain",), float),
    "adc": (("-adc",), float),
    "bits": (("-bits",), int),
    "psf": (("-psf",), str),
    "psf_fwhm": (("-psf_fwhm", "-psf_size", "-psf_sigma", "-psf_width"), float),
    "psf_radius": (("-psf_radius", "-psf_rad"), float),
    "pixel": (("-pixel",), float),
    "detpixels": (("-detpixels",), int),
    "detpixels_x": (("-detpixels_x",), int),
    "detpixels_y": (("-detpixels_y",), int),
    "detsize": (("-detsize",), float),
    "detsize_x": (("-detsize_x",), float),
    "detsize_y": (("-detsize_y",), float),
    "distance": (("-distance",), float),
    "lambda": (("-lambda",), float),
    "Xbeam": (("-Xbeam",), float),
    "Ybeam": (("-Ybeam",), float),
    "phi": (("-phi",), float),
    "osc": (("-osc",), float),
    "readout": (("-readout", "-readout_noise", "-readnoise"), float),
    "flicker": (("-flicker",), float),
    "calibration": (("-calibration",), float),
    "seed": (("-seed",), int),
    "calib_seed": (("-calib_seed",), int),
    "badpix_seed": (("-badpix_seed",), int),
    "hotpix_seed": (("-hotpix_seed",), int),
    "parity": (("--parity",), str),
    "device": (("--device",), str),
    "tile": (("--tile",), int),
}
SWITCH = {"-nonoise": "nonoise", "-nopgm": "nopgm"}
_SPELLING = {s: (name, typ) for name, (spellings, typ) in VALUE.items() for s in spellings}
DEFAULTS = {
    "intfile": "intimage.img",
    "noisefile": "noiseimage.img",
    "pgmfile": "image.pgm",
    "scale": 1.0,
    "fluence": DEFAULT_FLUENCE,
    "gain": 1.0,
    "adc": 40.0,
    "bits": 16,
    "psf_fwhm": 46.0,
    "psf_radius": 0.0,
    "pixel": 0.1,
    "distance": 100.0,
    "lambda": 1.0,
    "phi": 0.0,
    "osc": 1.0,
    "readout": 0.0,
    "flicker": 0.0,
    "calibration": 0.03,
    "calib_seed": 123456789,
    "parity": "spec",
    "device": "cpu",
}
#: the fields of :class:`DetectorModel` read from noisify's options of the same name
MODEL_FIELDS = (
    "scale",
    "fluence",
    "gain",
    "adc",
    "bits",
    "psf",
    "psf_fwhm",
    "psf_radius",
    "pixel",
    "readout",
    "flicker",
    "calibration",
    "calib_seed",
    "parity",
    "device",
    "tile",
    "seed",
)

#: the simulation's detector-model service flags: (option, service flag, noisify's flag)
MODEL_FLAGS = (
    ("psf", "--psf", "-psf"),
    ("psf_fwhm", "--psf-fwhm", "-psf_fwhm"),
    ("psf_radius", "--psf-radius", "-psf_radius"),
    ("readout", "--readout", "-readout"),
    ("flicker", "--flicker", "-flicker"),
    ("calibration", "--calibration", "-calibration"),
    ("gain", "--gain", "-gain"),
)

_SEED = (-(2**63) + 1, 2**63 - 1, True)
#: ranges of noisify's numbers that are not the model's (its file and header values)
_FILE_RANGES = {
    "detsize": (0.0, 1e12, False),
    "detsize_x": (0.0, 1e12, False),
    "detsize_y": (0.0, 1e12, False),
    "distance": (0.0, 1e12, False),
    "lambda": (0.0, 1e12, False),
    "Xbeam": (-1e12, 1e12, True),
    "Ybeam": (-1e12, 1e12, True),
    "phi": (-1e9, 1e9, True),
    "osc": (-1e9, 1e9, True),
    "detpixels": (0, 2**31 - 1, True),
    "detpixels_x": (0, 2**31 - 1, True),
    "detpixels_y": (0, 2**31 - 1, True),
    "tile": (1, 2**31 - 1, True),
    "seed": _SEED,
    "badpix_seed": _SEED,
    "hotpix_seed": _SEED,
}


def model_given(opts) -> list[str]:
    """The detector-model service flags given (``--psf``, ``--readout``, ...), in table order."""
    return [flag for attr, flag, _ in MODEL_FLAGS if getattr(opts, attr, None) is not None]


def parse_args(argv: list[str]) -> dict:
    """noisify's flags (and ``--parity``, ``--device``, ``--tile``) -> ``{name: value}`` with defaults,
    checked; ``typed`` holds the spelling of each flag given (errors name the flag as the user typed it)."""
    out: dict = dict(DEFAULTS, nonoise=False, nopgm=False)
    typed: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in SWITCH:
            out[SWITCH[a]] = True
        elif a in _SPELLING:
            name, typ = _SPELLING[a]
            if i + 1 >= len(argv):
                raise UsageError("needs a value", flag=a)
            out[name] = _value(a, argv[i + 1], typ)
            typed[name] = a
            i += 1
        elif not a.startswith("-") and "floatimage.bin" in a:  # noisify takes such a name without a flag
            out["floatfile"] = a
        else:
            raise UsageError(f"unknown flag or argument {a!r} (see noisify's flags; bragg-dask noisify --help)")
        i += 1
    out["typed"] = typed
    _check(out)
    return out


def _value(flag: str, text: str, typ):
    try:
        return typ(text) if typ is not int else int(text, 10)
    except ValueError:
        raise UsageError(
            f"not a{'n integer' if typ is int else ' number' if typ is float else ''}: {text!r}", flag=flag
        ) from None


def _check(o: dict) -> None:
    """Every value in its range (finite, the flag named as typed); the choices among theirs."""
    if "floatfile" not in o:
        raise UsageError("noisify needs the float image to read: -floatfile F.bin", flag="-floatfile")
    if o["parity"] not in ("spec", "c"):
        raise UsageError(f"spec or c, got {o['parity']!r}", flag="--parity")
    model_of(o)
    for name, (lo, hi, closed) in _FILE_RANGES.items():
        v = o.get(name)
        why = None if v is None else range_error(v, lo, hi, closed)
        if why:
            raise ConfigError(why, flag=o["typed"].get(name, "-" + name))


def model_of(o: dict, **changes) -> DetectorModel:
    """The model of noisify's options ``o`` (from :func:`parse_args`), with ``changes`` made."""
    values: dict[str, Any] = {name: o.get(name) for name in MODEL_FIELDS}
    values.update(noise=not o["nonoise"], **changes)
    typed = o.get("typed") or {}
    return DetectorModel(**values, flags=tuple((k, typed.get(k, "-" + k)) for k in sorted(typed)))


def model_from_service(opts, outputs=None) -> DetectorModel | None:
    """The model of a simulation's detector-model service flags, or None where none is given.

    With ``outputs`` (the run's :class:`~bragg_dask.nanobragg.params.OutputOptions`), the simulation's own
    numbers that mean something for it: ``-scale`` (when given: 0 is nanoBragg's automatic scale, which
    noisify does not have), ``-adc``, ``-nonoise`` (no noise file asked for).  Errors name the service
    flag; ``pixel`` is left for the store to give (the PSF's scale)."""
    if not model_given(opts):
        return None
    values: dict = {"parity": "c" if getattr(opts, "parity", "spec") == "c" else "spec"}
    flags = [(attr, service) for attr, service, _ in MODEL_FLAGS]
    for attr, _, _ in MODEL_FLAGS:
        v = getattr(opts, attr, None)
        if v is not None:
            values[attr] = v if attr == "psf" else float(v)
    if outputs is not None:
        if outputs.intfile_scale > 0:
            values["scale"] = float(outputs.intfile_scale)
            flags.append(("scale", "-scale"))
        values["adc"] = float(outputs.adc)
        flags.append(("adc", "-adc"))
        values["seed"] = outputs.seed
        values.update(noise=outputs.noisefile is not None)
    return DetectorModel(**values, flags=tuple(flags))


def model_from_record(record: dict) -> DetectorModel:
    """The model a store recorded (:meth:`DetectorModel.record`)."""
    values = {k: v for k, v in record.items() if k in MODEL_FIELDS}
    return DetectorModel(
        **values, noise=not record.get("nonoise", False), flags=tuple((k, "-" + k) for k in sorted(values))
    )


def noise_seed(seed: int | None, noise: bool) -> int:
    """``-seed``, else a time-based seed, reported (as the simulator does) when noise is drawn."""
    if seed is not None:
        return int(seed)
    seed = int(time.time())
    if noise:
        log.info("noise seed %d", seed)
    return seed


def check_device(device: str) -> None:
    """A CUDA device asked for is there."""
    if device != "cpu":
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("CUDA was asked for but torch sees no CUDA device here", flag="--device")


__all__ = [
    "DEFAULTS",
    "MODEL_FLAGS",
    "RANGES",
    "SWITCH",
    "VALUE",
    "check_device",
    "model_from_record",
    "model_from_service",
    "model_given",
    "model_of",
    "noise_seed",
    "parse_args",
]
