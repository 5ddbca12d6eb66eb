"""Per-shot variation (``--vary FILE``): what a dataset draws for every frame, from one seed (pure; no I/O
but reading the description).

A description is a JSON (or YAML) object::

    {"frames": 256, "seed": 7,
     "rotation": "uniform",                   # or {"around": [[3 x 3]], "spread_deg": 2.0}
     "N": {"integers": [5, 12]},                 # cells per axis: one distribution, or {"a": .., "b": .., "c": ..}
     "mosaic_spread_deg": {"uniform": [0.05, 0.3]},
     "mosaic_domains": {"choice": [1, 5, 10]},
     "wavelength_A": {"normal": [1.0, 0.001]},   # mono jitter
     "fluence": {"log_uniform": [1e23, 1e25]},   # photons per m^2
     "water_um": {"uniform": [0, 50]}}

A distribution is a number (fixed), ``{"uniform": [lo, hi]}``, ``{"normal": [mean, sd]}``,
``{"log_uniform": [lo, hi]}``, ``{"integers": [lo, hi]}`` (both included) or ``{"choice": [v, ...]}``, in
the unit its key names.  Frame ``k`` draws from ``numpy.random.default_rng([seed, k])`` in the order of
:data:`KEYS`, so a frame's values do not depend on the others (a resume, a subset, another tiling draws
the same).  Every drawn value must lie in its flag's range (``-N`` >= 1, ``-mosaic`` in [0, 90) deg...):
one that does not, an unknown key or a malformed distribution is a one-line error naming the key.

What a frame draws is applied to the run's simulation as the C program's flags would set it (``-N``,
``-mosaic``/``-mosaic_domains`` with mosaic seed ``k + 1``, ``-lambda``, ``-fluence``, ``-water``); the
rotation as ``--orientations`` turns the crystal; the detector model's values (``psf_fwhm_um``, ``gain``,
``readout_adu``, ``flicker``, ``calibration``) by the run's detector pass, frame by frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bragg_dask.errors import ConfigError

#: the keys a description may vary, in the order each frame draws them: (unit, check of a drawn value)
KEYS: dict[str, tuple[str, str]] = {
    "rotation": ("a rotation", "rotation"),
    "N": ("unit cells per crystal axis", "count"),
    "cell_rel": ("a fraction of the run's -cell value (a, b, c, alpha, beta, gamma)", "cell_rel"),
    "shape": ("an index in (square, round, gauss, tophat)", "shape"),
    "mosaic_spread_deg": ("degrees", "mosaic"),
    "mosaic_domains": ("domains", "count"),
    "wavelength_A": ("Angstrom", "positive"),
    "sase": ("each source's wavelength, a fraction of the frame's", "sase"),
    "spectrum_file": ("each source's wavelength, Angstrom", "spectrum_file"),
    "fluence": ("photons per m^2", "positive"),
    "water_um": ("micrometres", "non-negative"),
    # the detector's place, as -distance, -Xbeam and -Ybeam set it (the geometry resolved per frame)
    "distance_mm": ("millimetres", "positive"),
    "beam_x_mm": ("millimetres", "finite"),
    "beam_y_mm": ("millimetres", "finite"),
    # the detector model's (the run's --psf/--gain... with --zarr; applied by its pass over the store)
    "psf_fwhm_um": ("micrometres", "positive"),
    "gain": ("ADU per photon", "positive"),
    "readout_adu": ("ADU rms", "non-negative"),
    "flicker": ("a fraction of the photons", "non-negative"),
    "calibration": ("a fraction rms per pixel", "non-negative"),
}
#: the keys the detector model takes (its field for each), not the simulation
MODEL_FIELDS = {"psf_fwhm_um": "psf_fwhm", "gain": "gain", "readout_adu": "readout", "flicker": "flicker",
                "calibration": "calibration"}  # fmt: skip
#: the C program's flag each key stands for (the range checked is the flag's)
FLAGS = {
    "N": "-N",
    "cell_rel": "-cell",
    "shape": "-square_xtal/-round_xtal/-gauss_xtal/-tophat_spots",
    "sase": "-sourcefile",
    "spectrum_file": "-sourcefile",
    "mosaic_spread_deg": "-mosaic",
    "mosaic_domains": "-mosaic_domains",
    "wavelength_A": "-lambda",
    "fluence": "-fluence",
    "water_um": "-water",
    "distance_mm": "-distance",
    "beam_x_mm": "-Xbeam",
    "beam_y_mm": "-Ybeam",
    "psf_fwhm_um": "--psf-fwhm",
    "gain": "--gain",
    "readout_adu": "--readout",
    "flicker": "--flicker",
    "calibration": "--calibration",
}
#: the most a count may draw: a C int of unit cells; mosaic domains whose rotations a frame holds at once
MAX_COUNT = {"N": 2**31 - 1, "mosaic_domains": 100_000}
#: the keys whose draws :mod:`.vary_keys` makes (more than a number a frame, or not a number)
SPECIAL = ("cell_rel", "shape", "sase", "spectrum_file")
#: the most frames a description may have (every frame's draws are checked before any work)
MAX_FRAMES = 10_000_000
FORMS = ("uniform", "normal", "log_uniform", "integers", "choice")


@dataclass(frozen=True)
class Variation:
    """A parsed description: ``frames``, ``seed`` and ``keys`` (key -> its distribution, as given)."""

    frames: int
    seed: int = 0
    keys: tuple[tuple[str, Any], ...] = ()
    where: str = "--vary"
    labels: str = "table"  # besides the draws: "table" (reflections), "bragg" (and Bragg images) or "none"
    folder: str = ""  # where a spectrum_file's paths start ("": the working folder)

    def to_dict(self) -> dict:
        """As a store records it (in its fingerprint): the description itself."""
        out = {"frames": self.frames, "seed": self.seed, **{k: v for k, v in self.keys}}
        return out if self.labels == "table" else {**out, "labels": self.labels}

    def draw(self, k: int) -> dict:
        """Frame ``k``'s values: key -> value (``orientation``: a 3 x 3 rotation as nested tuples; ``N``:
        three counts), each checked against its flag's range."""
        rng = np.random.default_rng([self.seed, k])
        given = dict(self.keys)
        out: dict = {}
        for key in KEYS:
            if key not in given:
                continue
            if key == "rotation":
                out[key] = _orientation(given[key], rng, self.where)
            elif key in SPECIAL:
                out[key] = self._special(key, given[key], rng, k)
            elif key == "N":
                spec = given[key]
                axes = (
                    [spec[a] for a in "abc"] if isinstance(spec, dict) and set(spec) == {"a", "b", "c"} else [spec] * 3
                )
                out[key] = tuple(self._value("N", s, rng, k) for s in axes)
            else:
                out[key] = self._value(key, given[key], rng, k)
        return out

    def _special(self, key: str, spec, rng: np.random.Generator, k: int):
        from bragg_dask.planning import vary_keys

        if key == "cell_rel":
            return vary_keys.draw_cell(spec, rng, _sample, self.where, k)
        if key == "shape":
            return vary_keys.draw_shape(spec, rng)
        if key == "sase":
            return vary_keys.draw_sase(spec, rng, _sample, self.where, k)
        return vary_keys.draw_spectrum_file(spec, self.where, k, self.folder)

    def _value(self, key: str, spec, rng: np.random.Generator, k: int):
        v = _sample(spec, rng)
        check = KEYS[key][1]
        ok = {
            "count": lambda x: math.isfinite(x) and float(x) == int(x) and 1 <= int(x) <= MAX_COUNT.get(key, 1),
            "positive": lambda x: math.isfinite(x) and x > 0,
            "non-negative": lambda x: math.isfinite(x) and x >= 0,
            "mosaic": lambda x: math.isfinite(x) and 0 <= x < 90,
            "finite": math.isfinite,
        }[check](float(v))
        if not ok:
            what = {"count": f"a whole number in [1, {MAX_COUNT.get(key)}]", "positive": "> 0",
                    "non-negative": ">= 0", "mosaic": "in [0, 90)", "finite": "finite"}  # fmt: skip
            raise ConfigError(
                f"{key}: frame {k} draws {v:g}, not {what[check]} ({FLAGS[key]}'s range, {KEYS[key][0]})",
                flag=self.where,
            )
        return int(v) if check == "count" else float(v)


def drawn_width(key: str, spec) -> int:
    """How many numbers key ``key`` (given as ``spec``) records a frame: 0 for one (a ``(frames,)`` array)."""
    if key == "N":
        return 3
    if key == "cell_rel":
        return 6
    if key in ("sase", "spectrum_file"):
        return int(spec["sources"])
    return 0


def _sample(spec, rng: np.random.Generator) -> float:
    if not isinstance(spec, dict):
        return float(spec)
    ((form, args),) = spec.items()
    if form == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if form == "normal":
        return float(rng.normal(args[0], args[1]))
    if form == "log_uniform":
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    if form == "integers":
        return float(rng.integers(int(args[0]), int(args[1]), endpoint=True))
    return float(args[int(rng.integers(0, len(args)))])  # choice


def _orientation(spec, rng: np.random.Generator, where: str) -> tuple:
    """A rotation: uniform on SO(3), or ``around`` a given one by a random axis and an angle drawn from a
    normal of ``spread_deg`` (degrees)."""
    if spec == "uniform":
        q = rng.standard_normal(4)
        w, x, y, z = q / np.linalg.norm(q)
        u = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    else:
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        angle = math.radians(float(rng.normal(0.0, spec["spread_deg"])))
        kx = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
        turn = np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)
        u = turn @ np.asarray(spec["around"], dtype=np.float64)
    return tuple(tuple(float(x) for x in row) for row in u)


def read_variation(path: str, flag: str = "--vary", folder: str = "") -> Variation:
    """The description in ``path`` (JSON; YAML where PyYAML is installed and the name ends in .yaml/.yml),
    checked (:func:`variation_of`); errors name ``flag``, the file and the key."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})", flag=flag) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", flag=flag) from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"{path}: reading YAML needs PyYAML (pip install pyyaml); or give JSON", flag=flag
            ) from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not YAML ({str(exc).splitlines()[0]})", flag=flag) from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {exc.lineno}: not JSON ({exc.msg})", flag=flag) from None
    return variation_of(doc, f"{flag}: {path}", folder)


def variation_of(doc, where: str = "--vary", folder: str = "") -> Variation:
    """A :class:`Variation` from a parsed description (the Python object: the same dict), every key and
    distribution checked, and every frame's draws (a value out of range: the key and the frame)."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{key}: {why}", flag=where)

    if not isinstance(doc, dict):
        raise ConfigError("expected an object of keys (frames, seed, and what varies)", flag=where)
    unknown = sorted(set(doc) - {"frames", "seed"} - set(KEYS))
    if unknown:
        raise bad(unknown[0], f"unknown key (the keys: frames, seed, {', '.join(KEYS)})")
    frames, seed = doc.get("frames"), doc.get("seed", 0)
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise bad("frames", f"a whole number of frames in [1, {MAX_FRAMES}], got {frames!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise bad("seed", f"a whole number >= 0, got {seed!r}")
    keys = []
    for key in KEYS:
        if key in doc:
            _check_spec(key, doc[key], bad)
            keys.append((key, doc[key]))
    if not keys:
        raise ConfigError(f"nothing varies: give at least one of {', '.join(KEYS)}", flag=where)
    v = Variation(frames=frames, seed=seed, keys=tuple(keys), where=where, folder=folder)
    for k in range(frames):  # every draw checked now: an out-of-range value is said before any work
        v.draw(k)
    return v


def _check_spec(key: str, spec, bad) -> None:
    if key == "rotation":
        if spec == "uniform":
            return
        if not isinstance(spec, dict) or set(spec) != {"around", "spread_deg"}:
            raise bad(key, 'expected "uniform" or {"around": [[3 x 3]], "spread_deg": degrees}')
        u = np.asarray(spec["around"], dtype=np.float64) if _numbers(spec["around"], 9) else None
        if u is None or u.shape != (3, 3) or not np.allclose(u @ u.T, np.eye(3), atol=1e-6) or np.linalg.det(u) < 0:
            raise bad(key, "around: a 3 x 3 rotation matrix (orthonormal rows, determinant +1)")
        if not _number(spec["spread_deg"]) or spec["spread_deg"] < 0:
            raise bad(key, f"spread_deg: degrees >= 0, got {spec['spread_deg']!r}")
        return
    if key in SPECIAL:
        from bragg_dask.planning import vary_keys

        if key == "cell_rel":
            vary_keys.check_cell(spec, bad, _check_distribution)
        elif key == "shape":
            vary_keys.check_shape(spec, bad)
        elif key == "sase":
            vary_keys.check_sase(spec, bad, _check_distribution, _number)
        else:
            vary_keys.check_spectrum_file(spec, bad)
        return
    if key == "N" and isinstance(spec, dict) and set(spec) == {"a", "b", "c"}:
        for axis in "abc":
            _check_distribution(f"N.{axis}", spec[axis], bad)
        return
    _check_distribution(key, spec, bad)


def _check_distribution(key: str, spec, bad) -> None:
    if _number(spec):
        return
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in FORMS:
        raise bad(key, f"a number or one of {{{', '.join(f'{f!r}: ...' for f in FORMS)}}}, got {spec!r}")
    ((form, args),) = spec.items()
    if form == "choice":
        if not isinstance(args, list) or not args or not all(_number(a) for a in args):
            raise bad(key, f"choice: a list of numbers, got {args!r}")
        return
    if not isinstance(args, list) or len(args) != 2 or not all(_number(a) for a in args):
        raise bad(key, f"{form}: two numbers, got {args!r}")
    lo, hi = (float(a) for a in args)
    if form == "normal" and hi < 0:
        raise bad(key, f"normal: [mean, sd] with sd >= 0, got {args!r}")
    if form != "normal" and lo > hi:
        raise bad(key, f"{form}: [low, high] with low <= high, got {args!r}")
    if form == "uniform" and not math.isfinite(hi - lo):
        raise bad(key, f"uniform: a range of finite width, got {args!r}")
    if form == "log_uniform" and lo <= 0:
        raise bad(key, f"log_uniform: bounds > 0, got {args!r}")


def _number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _numbers(x, n: int) -> bool:
    flat = np.asarray(x, dtype=object).ravel() if isinstance(x, list) else None
    return flat is not None and flat.size == n and all(_number(v) for v in flat)


def apply(sim, drawn: dict, frame: int):
    """``sim`` with frame ``frame``'s drawn values (but the orientation, which the frame applies): as the C
    program's ``-N``, ``-mosaic``/``-mosaic_domains`` (the domains drawn with mosaic seed ``frame + 1``
    from a fresh generator), ``-lambda`` (one source), ``-fluence`` and ``-water`` would set them."""
    cr, beam = sim.crystal, sim.beam
    if "N" in drawn:
        cr = dataclasses.replace(cr, n_cells=tuple(drawn["N"]))
    if "mosaic_spread_deg" in drawn or "mosaic_domains" in drawn:
        from bragg_dask.physics.constants import RTD

        # degrees / RTD, as the C program reads -mosaic
        spread = drawn["mosaic_spread_deg"] / RTD if "mosaic_spread_deg" in drawn else cr.mosaic_spread_rad
        domains = drawn.get("mosaic_domains", cr.n_domains)
        cr = dataclasses.replace(cr, mosaic_spread_rad=spread, mosaic_umats=mosaic_umats(spread, domains, frame + 1))
    if "wavelength_A" in drawn:
        lam = drawn["wavelength_A"] / 1e10
        src = dataclasses.replace(beam.sources[0], wavelength_m=lam)
        beam = dataclasses.replace(beam, wavelength_m=lam, sources=(src,))
    if "fluence" in drawn:
        beam = dataclasses.replace(beam, fluence=drawn["fluence"])
    if "shape" in drawn:
        from bragg_dask.planning.vary_keys import SHAPES

        cr = dataclasses.replace(cr, shape=SHAPES[int(drawn["shape"])])
    if "sase" in drawn or "spectrum_file" in drawn:
        beam = _spectrum(beam, drawn)
    out = dataclasses.replace(sim, crystal=cr, beam=beam)
    if "water_um" in drawn:
        out = dataclasses.replace(out, water_size_m=drawn["water_um"] / 1e6)
    return out


def _spectrum(beam, drawn: dict):
    """The beam with the frame's sources (the run's one source's direction): ``sase``'s fractions of the
    frame's wavelength, or ``spectrum_file``'s wavelengths (Angstrom); as a ``-sourcefile`` of those lines."""
    incident = beam.sources[0].incident
    if "sase" in drawn:
        lams = [beam.wavelength_m * f for f in drawn["sase"]]
    else:
        lams = [x / 1e10 for x in drawn["spectrum_file"]]
    from bragg_dask.config import Source

    return dataclasses.replace(beam, sources=tuple(Source(incident, lam) for lam in lams))


def mosaic_umats(spread_rad: float, domains: int, seed: int) -> tuple:
    """The C program's mosaic domains (its ``mosaic_rotation_umat`` draws, domain 0 the identity) for a
    spread, a count and ``-mosaic_seed seed``, from a fresh generator (no random misset before them)."""
    from bragg_dask.physics.rng import Ran1, mosaic_rotation_umat

    rng, umats, seed = Ran1(), [], -seed  # (the C program hands ran1 -N for -mosaic_seed N)
    if spread_rad == 0.0:
        domains = 1
    for m in range(domains):
        u, seed = mosaic_rotation_umat(spread_rad, rng, seed)
        umats.append(np.eye(3) if m == 0 else u)
    return tuple(tuple(tuple(float(x) for x in row) for row in u) for u in umats)


def check_base(variation: Variation, sim, oversample_given: bool, misset_random: bool) -> None:
    """What a run must be for its frames to be the C program's with the drawn flags: an explicit
    ``-oversample`` where N or the wavelength varies (the automatic one depends on them), one source where
    the wavelength varies, no random misset where the mosaic does (its domains come from a fresh
    generator).  Else one line naming the key."""
    keys = dict(variation.keys)
    placed = [k for k in GEOMETRY_KEYS if k in keys]
    if placed and (sim.detector.panels or sim.detector.curved):
        raise ConfigError(f"{placed[0]}: places nanoBragg's single flat detector, not this one", flag=variation.where)
    for key in ("N", "cell_rel", "wavelength_A", *placed):
        if key in keys and not oversample_given:
            raise ConfigError(f"{key}: varies the automatic oversampling too: give -oversample", flag=variation.where)
    for key in ("wavelength_A", "sase", "spectrum_file"):
        if key in keys and len(sim.beam.sources) != 1:
            raise ConfigError(f"{key}: one source only (no divergence, dispersion or -sourcefile)",
                              flag=variation.where)  # fmt: skip
    if "spectrum_file" in keys and ({"wavelength_A", "sase"} & set(keys)):
        other = "wavelength_A" if "wavelength_A" in keys else "sase"
        raise ConfigError(f"spectrum_file: its wavelengths are the frame's: not with {other}", flag=variation.where)
    if misset_random and ({"mosaic_spread_deg", "mosaic_domains"} & set(keys)):
        raise ConfigError("mosaic: not with -misset random (give a misset, or vary the rotation)", flag=variation.where)


def model_draws(frames) -> dict[int, dict]:
    """Each frame's detector-model fields drawn (frame index -> {field: value}), for the run's detector
    pass; empty where nothing of the model varies."""
    out = {}
    for f in frames:
        drawn = {MODEL_FIELDS[k]: v for k, v in dict(f.drawn).items() if k in MODEL_FIELDS}
        if drawn:
            out[f.index] = drawn
    return out


def check_model(variation: Variation, has_model: bool) -> None:
    """A description drawing the detector model's values needs the run's model (``--psf``, ``--gain``...
    with ``--zarr``): one line naming the key otherwise."""
    keys = [k for k, _ in variation.keys if k in MODEL_FIELDS]
    if keys and not has_model:
        raise ConfigError(
            f"{keys[0]}: the detector model's value: give the run's model (--psf, --gain, --readout...)",
            flag=variation.where,
        )


#: the keys that place the detector (a geometry resolved per frame from the run's flags)
GEOMETRY_KEYS = ("distance_mm", "beam_x_mm", "beam_y_mm")
