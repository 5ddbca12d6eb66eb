"""``bragg-dask --help``: every flag, with its meaning, unit and default, from the parsers' own tables.

The nanoBragg flags are the rules of :data:`bragg_dask.nanobragg.args.RULES`, in table order; this
module adds what the table does not say, for each rule (keyed by its first pattern): its section,
the names of its values (one per value the rule takes), the unit, the C program's default ("-":
none) and a short description (:data:`C_FLAGS`).  A rule without an entry is an error
(:func:`missing_entries`; ``tests/test_help.py``), so the help cannot fall behind the table.  The
service flags and the ``export`` subcommand's flags are rendered from their argparse parsers'
actions (:func:`options_help`).

Nothing here imports torch at import time; building the help imports the rule table (whose module
does).
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from dataclasses import dataclass
from typing import NoReturn

CRYSTAL = "crystal"
BEAM = "beam"
GEOMETRY = "detector geometry"
PIXELS = "detector pixels and ROI"
SAMPLING = "sampling and steps"
FILES = "structure factors and input files"
OUTPUT = "output files and scales"
NOISE = "noise and seeds"
MISC = "miscellaneous and ignored"
SECTIONS = (CRYSTAL, BEAM, GEOMETRY, PIXELS, SAMPLING, FILES, OUTPUT, NOISE, MISC)


@dataclass(frozen=True)
class FlagHelp:
    """Help for one rule: ``values`` names its values (one word per value), ``unit`` and ``default``
    ("-": none), ``text`` what it means."""

    section: str
    values: str
    unit: str
    default: str
    text: str


H = FlagHelp
_SIZE = "crystal size along {} (sets N{}{})"
_CONV = "{} convention: its axes, beam centre and pivot"
_VEC = "{}; sets the custom convention"
_IGNORED = "no effect (as in nanoBragg)"

#: help for every rule of ``RULES``, keyed by the rule's first pattern
C_FLAGS: dict[str, FlagHelp] = {
    "-img": H(FILES, "FILE", "SMV", "-", "SMV image: its header sets detector, distance, beam centre, lambda, phi"),
    "-mask": H(FILES, "FILE", "SMV", "-", "SMV image: its 0 pixels are skipped; its header as -img's"),
    "-Na": H(CRYSTAL, "N", "cells", "1", "unit cells along a"),
    "-Nb": H(CRYSTAL, "N", "cells", "1", "unit cells along b"),
    "-Nc": H(CRYSTAL, "N", "cells", "1", "unit cells along c"),
    "-N": H(CRYSTAL, "N", "cells", "1", "unit cells along a, b and c"),
    "-cell": H(
        CRYSTAL,
        "A [B [C [ALPHA [BETA [GAMMA]]]]]",
        "Angstrom, deg",
        "-",
        "unit cell (or -mat); B, C default to A, angles to 90",
    ),
    "-misset": H(
        CRYSTAL, "RX RY RZ", "deg", "0 0 0", "rotation about x, y, then z; '-misset random': a random orientation"
    ),
    "-samplesize": H(CRYSTAL, "SIZE", "mm", "0 (-N)", "crystal size along x, y and z (sets the cell counts)"),
    "-sample_thick": H(CRYSTAL, "X", "mm", "0", _SIZE.format("x", "a", "")),
    "-sample_width": H(CRYSTAL, "Y", "mm", "0", _SIZE.format("y", "b", "; at most -beamsize")),
    "-sample_heigh": H(CRYSTAL, "Z", "mm", "0", _SIZE.format("z", "c", "; at most -beamsize")),
    "-xtalsize": H(CRYSTAL, "SIZE", "mm", "0 (-N)", "as -samplesize"),
    "-xtal_thick": H(CRYSTAL, "X", "mm", "0", "as -sample_thick"),
    "-xtal_width": H(CRYSTAL, "Y", "mm", "0", "as -sample_width"),
    "-xtal_heigh": H(CRYSTAL, "Z", "mm", "0", "as -sample_height"),
    "-density": H(MISC, "RHO", "g/cm^3", "-", "crystal density; " + _IGNORED),
    "-molec": H(MISC, "N", "-", "-", "molecules per cell; " + _IGNORED),
    "-MW": H(MISC, "MW", "g/mol", "-", "molecular weight; " + _IGNORED),
    "-Xbeam": H(GEOMETRY, "X", "mm", "centre", "beam centre X, as the convention defines it"),
    "-Ybeam": H(GEOMETRY, "Y", "mm", "centre", "beam centre Y, as the convention defines it"),
    "-Xclose": H(GEOMETRY, "X", "mm", "centre", "X of the detector point nearest the sample"),
    "-Yclose": H(GEOMETRY, "Y", "mm", "centre", "Y of the detector point nearest the sample"),
    "-ORGX": H(GEOMETRY, "PX", "pixels", "centre", "XDS origin: fast pixel nearest the sample"),
    "-ORGY": H(GEOMETRY, "PX", "pixels", "centre", "XDS origin: slow pixel nearest the sample"),
    "-pivot": H(
        GEOMETRY,
        "sample|beam",
        "-",
        "convention",
        "detector turns about the sample or the beam spot (custom convention)",
    ),
    "-mosflm": H(GEOMETRY, "", "-", "on", _CONV.format("MOSFLM")),
    "-xds": H(GEOMETRY, "", "-", "off", _CONV.format("XDS")),
    "-adxv": H(GEOMETRY, "", "-", "off", _CONV.format("ADXV")),
    "-denzo": H(GEOMETRY, "", "-", "off", _CONV.format("DENZO")),
    "-dials": H(GEOMETRY, "", "-", "off", _CONV.format("DIALS")),
    "-fdet_vector": H(GEOMETRY, "X Y Z", "-", "convention", _VEC.format("detector fast axis")),
    "-sdet_vector": H(GEOMETRY, "X Y Z", "-", "convention", _VEC.format("detector slow axis")),
    "-odet_vector": H(GEOMETRY, "X Y Z", "-", "convention", _VEC.format("detector normal")),
    "-beam_vector": H(GEOMETRY, "X Y Z", "-", "convention", _VEC.format("beam direction")),
    "-polar_vector": H(BEAM, "X Y Z", "-", "convention", _VEC.format("polarisation axis")),
    "-spindle_axis": H(GEOMETRY, "X Y Z", "-", "convention", _VEC.format("phi rotation axis")),
    "-twotheta_axis": H(
        GEOMETRY, "X Y Z", "-", "convention", "two-theta axis; sets the custom convention and, as in C, -twotheta X"
    ),
    "-pix0_vector": H(GEOMETRY, "X Y Z", "m", "-", "ignored as in nanoBragg, but sets the custom convention"),
    "-distance": H(GEOMETRY, "D", "mm", "100", "sample to beam spot distance (beam pivot)"),
    "-close_distance": H(GEOMETRY, "D", "mm", "-", "sample to detector plane along its normal; beats -distance"),
    "-detector_abs": H(PIXELS, "DEPTH|inf", "um", "thickness", "sensor attenuation depth; 'inf' or 0: none"),
    "-detector_thick": H(PIXELS, "T", "um", "0", "sensor thickness"),
    "-detector_thicksteps": H(SAMPLING, "N", "layers", "auto (2)", "sensor layers"),
    "-thicksteps": H(SAMPLING, "N", "layers", "auto (2)", "as -detector_thicksteps"),
    "-twotheta": H(GEOMETRY, "ANGLE", "deg", "0", "detector swing about the two-theta axis"),
    "-detector_rotx": H(GEOMETRY, "ANGLE", "deg", "0", "detector rotation about x"),
    "-detector_roty": H(GEOMETRY, "ANGLE", "deg", "0", "detector rotation about y"),
    "-detector_rotz": H(GEOMETRY, "ANGLE", "deg", "0", "detector rotation about z"),
    "-detsize": H(PIXELS, "SIZE", "mm", "102.4", "detector size, both directions (a pixel count wins)"),
    "-detsize_f": H(PIXELS, "SIZE", "mm", "102.4", "detector size along the fast axis"),
    "-detsize_s": H(PIXELS, "SIZE", "mm", "102.4", "detector size along the slow axis"),
    "-detpixels": H(PIXELS, "N", "pixels", "1024", "detector pixels, both directions"),
    "-detpixels_f": H(PIXELS, "N", "pixels", "1024", "detector pixels along the fast axis"),
    "-detpixels_s": H(PIXELS, "N", "pixels", "1024", "detector pixels along the slow axis"),
    "-curved_det": H(GEOMETRY, "", "-", "off", "pixels on a sphere about the sample (MOSFLM geometry)"),
    "-pixel": H(PIXELS, "PX", "mm", "0.1", "pixel size"),
    "-point_pixel": H(PIXELS, "", "-", "off", "solid angle 1/R^2 instead of the pixel's"),
    "-polar": H(BEAM, "K", "-", "0", "Kahn polarisation factor, -1..1 (cancels -nopolar)"),
    "-nopolar": H(BEAM, "", "-", "off", "no polarisation factor"),
    "-oversample_thick": H(SAMPLING, "", "-", "off", "sensor absorption per sub-pixel (a running product)"),
    "-oversample_polar": H(SAMPLING, "", "-", "off", "polarisation per source and sub-pixel (beats -nopolar)"),
    "-oversample_omega": H(SAMPLING, "", "-", "off", "solid angle per sub-pixel (a running product)"),
    "-oversample": H(SAMPLING, "N", "sub-pixels", "auto", "sub-pixels along each pixel edge"),
    "-roi": H(PIXELS, "XMIN XMAX YMIN YMAX", "pixels", "all", "render only these pixels (0-based, inclusive)"),
    "-lambda": H(BEAM, "LAMBDA", "Angstrom", "1", "wavelength"),
    "-energy": H(BEAM, "E", "eV", "12398.42 (1 A)", "photon energy, instead of -lambda"),
    "-fluence": H(BEAM, "F", "photons/m^2", "1.25932e29", "fluence; the default makes r_e^2 x fluence = 1"),
    "-flux": H(BEAM, "F", "photons/s", "0 (off)", "flux: fluence = flux x exposure / beamsize^2"),
    "-exposure": H(BEAM, "T", "s", "1", "exposure time (with -flux)"),
    "-beamsize": H(BEAM, "SIZE", "mm", "0.1", "beam size (with -flux); clips the crystal in y, z"),
    "-mosaici": H(CRYSTAL, "ANGLE", "deg", "0", "mosaic spread"),
    "-mosaic": H(CRYSTAL, "ANGLE", "deg", "0", "mosaic spread"),
    "-mosaic_dom": H(SAMPLING, "N", "domains", "auto", "mosaic domains (10 with a spread, else 1)"),
    "-dispersion": H(BEAM, "PCT", "percent", "0", "spectral width, full range"),
    "-dispsteps": H(SAMPLING, "N", "wavelengths", "auto", "wavelength steps over the dispersion"),
    "-divergence": H(BEAM, "R", "mrad", "0", "horizontal and vertical divergence range"),
    "-hdivrange": H(BEAM, "R", "mrad", "0", "horizontal divergence range"),
    "-vdivrange": H(BEAM, "R", "mrad", "0", "vertical divergence range"),
    "-hdivstep": H(SAMPLING, "STEP", "mrad", "auto", "horizontal divergence step"),
    "-hdivsteps": H(SAMPLING, "N", "steps", "auto", "horizontal divergence steps (alone: 1 rad)"),
    "-vdivstep": H(SAMPLING, "STEP", "mrad", "auto", "vertical divergence step"),
    "-vdivsteps": H(SAMPLING, "N", "steps", "auto", "vertical divergence steps (alone: 1 rad)"),
    "-divsteps": H(SAMPLING, "N", "steps", "auto", "horizontal and vertical divergence steps"),
    "-round_div": H(BEAM, "", "-", "on", "keep the divergence points inside an ellipse"),
    "-square_div": H(BEAM, "", "-", "off", "keep the whole rectangular divergence grid"),
    "-adc": H(OUTPUT, "OFFSET", "ADU", "40", "offset added to the int and noise images"),
    "-phi": H(CRYSTAL, "PHI", "deg", "0", "spindle angle at the start"),
    "-osc": H(CRYSTAL, "OSC", "deg", "0", "oscillation range (phi0 .. phi0 + osc)"),
    "-phistep": H(SAMPLING, "STEP", "deg", "auto", "phi step"),
    "-phisteps": H(SAMPLING, "N", "steps", "auto", "phi steps over the oscillation"),
    "-dmin": H(SAMPLING, "D", "Angstrom", "0 (off)", "resolution limit: finer scattering is skipped"),
    "-mat": H(FILES, "FILE", "-", "-", "MOSFLM orientation matrix (reciprocal axes x wavelength)"),
    "-hkl": H(FILES, "FILE", "-", "-", "structure factors: lines of 'h k l F'"),
    "-default_F": H(FILES, "F", "-", "0", "structure factor of reflections not in -hkl"),
    "-dump": H(MISC, "FILE", "-", "-", "the C program's Fdump.bin cache: neither read nor written"),
    "-stolout": H(MISC, "FILE", "-", "-", "sin(theta)/lambda output: never written (as in nanoBragg)"),
    "-stol": H(FILES, "FILE", "-", "-", "sin(theta)/lambda table: read and checked, unused (as in C)"),
    "-4stol": H(FILES, "FILE", "-", "-", "4 sin(theta)/lambda table: read and checked, unused (as in C)"),
    "-Q": H(FILES, "FILE", "-", "-", "Q table: read and checked, unused (as in C)"),
    "-sourcefile": H(BEAM, "FILE", "-", "-", "sources: lines of 'X Y Z weight lambda(m)' (no divergence grid)"),
    "-floatfile": H(OUTPUT, "FILE", "-", "floatimage.bin", "raw float32 image, photons per pixel"),
    "-intfile": H(OUTPUT, "FILE", "-", "intimage.img", "SMV image of scaled photons + -adc"),
    "-pgmfile": H(OUTPUT, "FILE", "-", "image.pgm", "8-bit PGM preview"),
    "-noisefile": H(OUTPUT, "FILE", "-", "noiseimage.img", "SMV image with Poisson noise"),
    "-nonoise": H(OUTPUT, "", "-", "off", "do not write the noise image"),
    "-nopgm": H(OUTPUT, "", "-", "off", "do not write the PGM image"),
    "-scale": H(OUTPUT, "S", "ADU/photon", "auto", "int image scale (auto: 55000 / max_I)"),
    "-pgmscale": H(OUTPUT, "S", "grey/photon", "auto", "PGM scale (auto: 250 / (5 rmsd)); as in C, also sets -scale"),
    "-coherent": H(MISC, "", "-", "off", _IGNORED),
    "-printout": H(MISC, "", "-", "off", _IGNORED),
    "-noprogress": H(MISC, "", "-", "off", "no progress messages"),
    "-progress": H(MISC, "", "-", "on", "progress messages"),
    "-interpolate": H(FILES, "", "-", "auto", "tricubic F interpolation (auto: on when an N <= 2)"),
    "-nointerpolate": H(FILES, "", "-", "auto", "nearest-neighbour F"),
    "-round_xtal": H(CRYSTAL, "", "-", "off", "round crystal spot shape"),
    "-square_xtal": H(CRYSTAL, "", "-", "on", "parallelepiped crystal spot shape"),
    "-gauss_xtal": H(CRYSTAL, "", "-", "off", "Gaussian spot shape"),
    "-binary_spots": H(CRYSTAL, "", "-", "off", "top-hat spot shape"),
    "-fudge": H(CRYSTAL, "F", "-", "1", "spot width factor of the round, Gaussian and top-hat shapes"),
    "-printout_pixel": H(MISC, "F S", "pixels", "-", _IGNORED),
    "-seed": H(NOISE, "N", "-", "time", "seed of the Poisson noise (reported when not given)"),
    "-mosaic_seed": H(NOISE, "N", "-", "12345678", "seed of the mosaic domain draws"),
    "-misset_seed": H(NOISE, "N", "-", "time", "seed of '-misset random' (as in C, also read as -misset)"),
    "-water": H(CRYSTAL, "W", "um", "0", "water background: a cube of side W"),
}

#: the usual full spelling of patterns that match by substring ("-mosaici" takes "-mosaicity")
SPELLED = {
    "-sample_heigh": "t",
    "-xtal_heigh": "t",
    "-heigh": "t",
    "-sample_den": "sity",
    "-mosaici": "ty",
    "-mosaic_spr": "ead",
    "-mosaic_dom": "ains",
    "-wave": "length",
}

#: what the export subcommand's arguments mean, where its parser gives no help of its own
EXPORT_FLAGS = {
    "store": "the Zarr store written by --zarr",
    "--frame": "the frame to write the C program's files of (default: 0)",
    "--all-frames": "every frame (with --nxmx and --cbf)",
    "--nxmx": "write a NeXus/NXmx HDF5 file",
    "--cbf": "write Pilatus-style miniCBF files",
    "--image": "the image --nxmx and --cbf carry: int (noiseless counts) or noise (the store's noise image) "
    "(default: int)",
    "-scale": "int image scale (default: 0, auto: 55000 / max_I)",
    "-pgmscale": "PGM scale (default: 0, auto: 250 / (5 rmsd))",
    "-seed": "noise seed (default: the store's)",
}

#: what the preview subcommand's arguments mean
PREVIEW_FLAGS = {
    "store": "the Zarr store written by --zarr",
    "--frame": "the frame to draw (default: 0)",
    "-o": "the PNG file to write (required)",
    "--rings": "draw resolution rings (from the store's geometry)",
    "--max-px": "the long side of the picture in pixels, the frame max-pooled to it (default: 1024)",
}


class _VerifyParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        from bragg_dask.errors import UsageError

        raise UsageError(message, flag="verify")


def verify_parser() -> argparse.ArgumentParser:
    """``bragg-dask verify``'s arguments (:mod:`bragg_dask.cli.verify` runs it)."""
    ap = _VerifyParser(prog="bragg-dask verify", add_help=False)
    ap.add_argument("store")
    ap.add_argument("--repair", action="store_true")
    return ap


VERIFY_FLAGS = {
    "store": "the Zarr store written by --zarr",
    "--repair": "run the store's recorded command again on it: the damaged tiles computed again, the detector "
    "model's frames through it again (never its output files, cluster or --overwrite)",
}

#: noisify's flags: canonical name -> (values, meaning and unit)
NOISIFY_FLAGS = {
    "floatfile": ("FILE", "the float image to read (photons/pixel, raw float32), required"),
    "intfile": ("FILE", "the noiseless int image (SMV)"),
    "noisefile": ("FILE", "the noisy int image (SMV; not with -nonoise)"),
    "pgmfile": ("FILE", "the int image as PGM (not with -nopgm)"),
    "header": ("FILE.img", "take the detector from an SMV image and write its header"),
    "scale": ("S", "photons are multiplied by S first"),
    "fluence": ("F", "photons/m^2 (for the header)"),
    "gain": ("G", "ADU per photon"),
    "adc": ("A", "ADU offset added to every pixel"),
    "bits": ("16|32", "bits per pixel of the int images"),
    "psf": ("gauss|fiber", "point-spread function (none without it)"),
    "psf_fwhm": ("UM", "the PSF's full width at half maximum (um)"),
    "psf_radius": ("PX", "the PSF's radius in pixels (0: automatic)"),
    "pixel": ("MM", "pixel size (mm)"),
    "detpixels": ("N", "pixels along both sides"),
    "detpixels_x": ("N", "pixels along the fast side"),
    "detpixels_y": ("N", "pixels along the slow side"),
    "detsize": ("MM", "detector size, both sides (mm)"),
    "detsize_x": ("MM", "detector size along x (mm)"),
    "detsize_y": ("MM", "detector size along y (mm)"),
    "distance": ("MM", "sample to detector distance, for the header (mm)"),
    "lambda": ("A", "wavelength, for the header (Angstrom)"),
    "Xbeam": ("MM", "beam centre x, for the header (mm)"),
    "Ybeam": ("MM", "beam centre y, for the header (mm)"),
    "phi": ("DEG", "phi at the start, for the header (deg)"),
    "osc": ("DEG", "oscillation, for the header (deg)"),
    "readout": ("ADU", "readout noise (rms ADU)"),
    "flicker": ("F", "fractional source flicker (rms)"),
    "calibration": ("F", "fractional pixel calibration error (rms)"),
    "seed": ("N", "noise seed"),
    "calib_seed": ("N", "seed of the calibration error"),
    "badpix_seed": ("N", "accepted, unused (as noisify)"),
    "hotpix_seed": ("N", "accepted, unused (as noisify)"),
    "parity": ("spec|c", "spec, or noisify's own quirks bit for bit"),
    "device": ("cpu|cuda", "where the PSF runs"),
    "tile": ("N", "compute the PSF a tile of N pixels at a time (the same image)"),
}

USAGE = """\
usage: bragg-dask <nanoBragg flags> [service flags]
       bragg-dask export STORE [export flags]
       bragg-dask preview STORE [--frame K] [--rings] [--max-px N] -o FRAME.png
       bragg-dask noisify <noisify flags> [--parity spec|c] [--tile N]
       bragg-dask verify STORE [--repair]
       bragg-dask --version

Simulates X-ray diffraction images as nanoBragg does.  Single-dash flags are the C program's, with
its meaning, units and defaults; double-dash service flags choose how and where the run is computed."""

C_NOTE = (
    "Flags match by substring, as in nanoBragg: -mosaici[ty] takes any flag containing -mosaici, "
    "-misset_seed is also read as -misset, -twotheta_axis as -twotheta, -pgmscale as -scale.  "
    "Each line: flag, values, meaning (unit; default)."
)


def missing_entries(rules=None) -> list[str]:
    """First patterns of the rules without a help entry (or whose value names miss their count)."""
    out = []
    for rule in _rules(rules):
        entry = C_FLAGS.get(rule.patterns[0])
        if entry is None or len(entry.values.split()) != abs(rule.nargs) or entry.section not in SECTIONS:
            out.append(rule.patterns[0])
    return out


def _rules(rules=None):
    if rules is not None:
        return rules
    from bragg_dask.nanobragg.args import RULES

    return RULES


def _names(rule) -> str:
    """The rule's patterns, with the usual completion of those that match by substring."""
    return ", ".join(p + (f"[{SPELLED[p]}]" if p in SPELLED else "") for p in rule.patterns)


def _line(head: str, text: str, width: int, col: int = 28) -> str:
    """``head`` in a column of ``col`` characters, then ``text`` wrapped to ``width``."""
    first = f"  {head}".ljust(col) + "  "
    return textwrap.fill(
        text,
        width,
        initial_indent=first,
        subsequent_indent=" " * (col + 2),
        break_on_hyphens=False,
        break_long_words=False,
    )


def _c_flag(rule, width: int) -> str:
    entry = C_FLAGS[rule.patterns[0]]
    head = " ".join(x for x in (_names(rule), entry.values) if x)
    facts = "; ".join(
        x
        for x in (entry.unit if entry.unit != "-" else "", f"default: {entry.default}" if entry.default != "-" else "")
        if x
    )
    return _line(head, f"{entry.text} ({facts})" if facts else entry.text, width)


def c_flags_help(width: int = 100, rules=None) -> str:
    """Every rule of ``RULES`` (or ``rules``), section by section, in table order within each."""
    rules = _rules(rules)
    unknown = missing_entries(rules)
    if unknown:
        raise KeyError(f"no help for nanoBragg flags {', '.join(unknown)} (add them to flaghelp.C_FLAGS)")
    parts = [textwrap.fill(C_NOTE, width)]
    for section in SECTIONS:
        lines = [_c_flag(r, width) for r in rules if C_FLAGS[r.patterns[0]].section == section]
        if lines:
            parts.append(f"nanoBragg flags: {section}:\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _metavar(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest.upper())
    if action.nargs == 0:
        return ""
    if action.metavar:
        return str(action.metavar)
    if action.choices:
        return "|".join(str(c) for c in action.choices)
    return action.dest.upper()


def _action_help(action: argparse.Action, fallback: dict[str, str]) -> str:
    """The action's own help, else ``fallback``'s text, else its default from the parser."""
    if action.help and action.help != argparse.SUPPRESS:
        return _expand(action)
    name = action.option_strings[0] if action.option_strings else action.dest
    text = fallback.get(name) or (C_FLAGS[name].text if name in C_FLAGS else "")
    if action.option_strings and action.nargs != 0 and "default" not in text and not action.required:
        default = (
            "none"
            if action.default is None
            else f"{action.default:g}"
            if isinstance(action.default, float)
            else str(action.default)
        )
        text = f"{text} (default: {default})" if text else f"default: {default}"
    return text


def _expand(action: argparse.Action) -> str:
    """The action's help with argparse's ``%(default)s`` style fields filled in, as argparse fills them."""
    text = action.help or ""
    try:
        return text % dict(vars(action), prog="bragg-dask")
    except (KeyError, ValueError, TypeError):
        return text


def options_help(parser: argparse.ArgumentParser, width: int = 100, fallback: dict[str, str] | None = None) -> str:
    """One entry per argument of ``parser``: its option strings and value, then its help."""
    lines = []
    for action in parser._actions:
        head = " ".join(x for x in (", ".join(action.option_strings), _metavar(action)) if x)
        lines.append(_line(head, _action_help(action, fallback or {}), width))
    return "\n".join(lines)


def help_text(service: argparse.ArgumentParser, width: int | None = None) -> str:
    """The whole ``--help``: usage, the service flags, the nanoBragg flags, the export subcommand's."""
    from bragg_dask.cli.export import _parser as export_parser

    if width is None:
        width = min(100, max(70, shutil.get_terminal_size((100, 24)).columns - 1))
    return "\n\n".join(
        (
            USAGE,
            "service flags:\n" + options_help(service, width),
            c_flags_help(width),
            "export flags (bragg-dask export STORE ...; single-dash flags as above):\n"
            + options_help(export_parser(), width, EXPORT_FLAGS),
        )
    )


def subcommand_help(name: str, width: int | None = None) -> str:
    """``bragg-dask export|preview|noisify|verify --help``: the subcommand's usage and every flag it takes."""
    if width is None:
        width = min(100, max(70, shutil.get_terminal_size((100, 24)).columns - 1))
    if name == "export":
        from bragg_dask.cli.export import _parser

        return (
            "usage: bragg-dask export STORE [--frame K | --all-frames] [-floatfile F] [-intfile F] [-noisefile F]\n"
            "                         [-pgmfile F] [--nxmx F.h5] [--cbf F.cbf] [-scale S] [-pgmscale S] [-adc A]\n"
            "                         [-seed N]\n\nA store's frame as the C program's files, or its frames as "
            "NXmx or CBF.\n\n" + options_help(_parser(), width, EXPORT_FLAGS)
        )
    if name == "verify":
        _parser = verify_parser
        return (
            "usage: bragg-dask verify STORE [--repair]\n\n"
            "A store checked file by file: every chunk against its checksum, every shard index and record;\n"
            "one line per problem. Exit status 0: whole, 1: problems found, 2: bad input or no repair.\n\n"
            + options_help(_parser(), width, VERIFY_FLAGS)
        )
    if name == "preview":
        from bragg_dask.cli.preview import _parser

        return (
            "usage: bragg-dask preview STORE [--frame K] [--rings] [--max-px N] -o FRAME.png\n\n"
            "A store's frame as a picture (log scale).\n\n" + options_help(_parser(), width, PREVIEW_FLAGS)
        )
    from bragg_dask.detector.flags import DEFAULTS, SWITCH, VALUE

    lines = [
        _line(
            " ".join((", ".join(spellings), NOISIFY_FLAGS[key][0])),
            NOISIFY_FLAGS[key][1]
            + (
                f" (default: {DEFAULTS[key]:g})"
                if isinstance(DEFAULTS.get(key), float)
                else f" (default: {DEFAULTS[key]})"
                if key in DEFAULTS
                else ""
            ),
            width,
        )
        for key, (spellings, _) in VALUE.items()
    ]
    lines += [
        _line(flag, {"nonoise": "no noise image", "nopgm": "no PGM image"}[key], width) for flag, key in SWITCH.items()
    ]
    return (
        "usage: bragg-dask noisify <noisify's flags> [--parity spec|c] [--device cpu|cuda] [--tile N]\n"
        "       bragg-dask noisify STORE [--frame K | --all-frames] <noisify's flags> [--parity spec|c]\n\n"
        "nanoBragg's companion program noisify: a float image through the detector (scale, PSF, gain, ADC,\n"
        "noise) into SMV int images; with a store first, its frames into the store's int and noise arrays.\n\n"
        "flags:\n"
        + "\n".join(lines)
        + "\n"
        + _line("--frame K, --all-frames", "with a store: one frame (default: 0) or every frame", width)
    )
