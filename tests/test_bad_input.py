"""Nothing wrong gets through: each class of bad input is one line naming the flag (or file:line),
exit status 2, no traceback, and nothing written.  The Python configuration classes refuse the same."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from bragg_dask import Source
from bragg_dask.cli import main
from bragg_dask.errors import ConfigError
from bragg_dask.nanobragg.args import RULES, parse_nanobragg_args

BASE = [
    "-cell",
    "50",
    "50",
    "50",
    "90",
    "90",
    "90",
    "-default_F",
    "100",
    "-N",
    "5",
    "-distance",
    "50",
    "-pixel",
    "0.2",
    "-detpixels",
    "16",
    "-lambda",
    "1.0",
    "-oversample",
    "1",
    "-noprogress",
]
OUTPUTS = ("floatimage.bin", "intimage.img", "image.pgm", "noiseimage.img")


# ----------------------------------------------------------------------------- every flag's values

NUM = ("abc", "nan", "inf", "-inf", "1e999", "")
INT = ("abc", "nan", "inf", "2.5", "")
FILE = ("-N", "")

# for every rule of the C program's argument table (by its first pattern): a full set of good values
# (for the missing-value test) and bad value sets; the CLI must refuse each one, naming the flag
TABLE: dict[str, tuple[tuple[str, ...], list]] = {
    "-img": (("x",), [*FILE]),
    "-mask": (("x",), [*FILE]),
    "-Na": (("3",), [*INT, "0", "-3"]),
    "-Nb": (("3",), [*INT, "0", "-3"]),
    "-Nc": (("3",), [*INT, "0", "-3"]),
    "-N": (("3",), [*INT, "0", "-3", "1e30"]),
    "-cell": (
        ("51", "52", "53", "90", "90", "90"),
        [
            ("50", "50", "50", "90", "90", "abc"),
            ("50", "50", "50", "90", "90", "nan"),
            ("0", "50", "50", "90", "90", "90"),
            ("50", "50", "50", "0", "90", "90"),
            ("50", "50", "50", "180", "90", "90"),
            ("50", "50", "50", "10", "10", "170"),
            ("50", "50", "50", "120", "120", "120"),
            ("-N", "50", "50", "90", "90", "90"),
        ],
    ),
    "-misset": (("1", "2", "3"), [("1", "2", "abc"), ("1", "nan", "3"), ("inf", "2", "3")]),
    "-samplesize": (("0.01",), [*NUM, "0", "-0.01"]),
    "-sample_thick": (("0.01",), [*NUM, "0", "-0.01"]),
    "-sample_width": (("0.01",), [*NUM, "0", "-0.01"]),
    "-sample_heigh": (("0.01",), [*NUM, "0", "-0.01"]),
    "-xtalsize": (("0.01",), [*NUM, "0", "-0.01"]),
    "-xtal_thick": (("0.01",), [*NUM, "0", "-0.01"]),
    "-xtal_width": (("0.01",), [*NUM, "0", "-0.01"]),
    "-xtal_heigh": (("0.01",), [*NUM, "0", "-0.01"]),
    "-density": (("1.2",), [*NUM, "0"]),
    "-molec": (("1",), [*NUM, "-1"]),
    "-MW": (("100",), [*NUM, "0"]),
    "-Xbeam": (("5",), [*NUM]),
    "-Ybeam": (("5",), [*NUM]),
    "-Xclose": (("5",), [*NUM]),
    "-Yclose": (("5",), [*NUM]),
    "-ORGX": (("5",), [*NUM]),
    "-ORGY": (("5",), [*NUM]),
    "-pivot": (("sample",), ["sideways", ""]),
    "-fdet_vector": (("0", "0", "1"), [("0", "0", "abc"), ("0", "nan", "1"), ("0", "0", "0")]),
    "-sdet_vector": (("0", "-1", "0"), [("0", "0", "inf"), ("0", "0", "0")]),
    "-odet_vector": (("1", "0", "0"), [("abc", "0", "0"), ("0", "0", "0")]),
    "-beam_vector": (("1", "0", "0"), [("nan", "0", "0"), ("0", "0", "0")]),
    "-polar_vector": (("0", "0", "1"), [("0", "0", "-inf"), ("0", "0", "0")]),
    "-spindle_axis": (("0", "0", "1"), [("0", "x", "1"), ("0", "0", "0")]),
    "-twotheta_axis": (("0", "1", "0"), [("0", "nan", "0"), ("0", "0", "0")]),
    "-pix0_vector": (("0.1", "0", "0"), [("0.1", "abc", "0"), ("inf", "0", "0")]),
    "-distance": (("60",), [*NUM, "0", "-50"]),
    "-close_distance": (("60",), [*NUM, "0", "-50"]),
    "-detector_abs": (("300",), ["abc", "nan", "-5", "", "5e-324", "1_0"]),
    "-detector_thick": (("300",), [*NUM, "-1"]),
    "-detector_thicksteps": (("3",), [*INT, "0", "-2"]),
    "-thicksteps": (("3",), [*INT, "0", "-2"]),
    "-twotheta": (("5",), [*NUM]),
    "-detector_rotx": (("5",), [*NUM]),
    "-detector_roty": (("5",), [*NUM]),
    "-detector_rotz": (("5",), [*NUM]),
    "-detsize": (("4",), [*NUM, "0", "-3"]),
    "-detsize_f": (("4",), [*NUM, "0", "-3"]),
    "-detsize_s": (("4",), [*NUM, "0", "-3"]),
    "-detpixels": (("20",), [*INT, "0", "-16"]),
    "-detpixels_f": (("20",), [*INT, "0", "-16"]),
    "-detpixels_s": (("20",), [*INT, "0", "-16"]),
    "-pixel": (("0.25",), [*NUM, "0", "-0.2"]),
    "-polar": (("0.5",), [*NUM, "1.5", "-2"]),
    "-oversample": (("2",), [*INT, "0", "-1"]),
    "-roi": (
        ("0", "7", "0", "7"),
        [
            ("0", "7", "0", "x"),
            ("0", "nan", "0", "7"),
            ("7", "0", "0", "7"),
            ("0", "7", "9", "2"),
            ("100", "200", "100", "200"),
            ("-9", "-1", "0", "7"),
        ],
    ),
    "-lambda": (("1.1",), [*NUM, "0", "-1"]),
    "-energy": (("12000",), [*NUM, "0", "-12000"]),
    "-fluence": (("1e24",), [*NUM, "0", "-1e24"]),
    "-flux": (("1e12",), [*NUM, "0", "-1e12"]),
    "-exposure": (("1",), [*NUM, "0", "-1"]),
    "-beamsize": (("0.1",), [*NUM, "0", "-0.1"]),
    "-mosaici": (("0.5",), [*NUM, "-0.5", "1e308"]),
    "-mosaic": (("0.5",), [*NUM, "-0.5"]),
    "-mosaic_dom": (("5",), [*INT, "0", "-3"]),
    "-dispersion": (("1",), [*NUM, "-1", "200", "250"]),
    "-dispsteps": (("3",), [*INT, "0", "-3"]),
    "-divergence": (("0.5",), [*NUM, "-0.5"]),
    "-hdivrange": (("0.5",), [*NUM, "-0.5"]),
    "-vdivrange": (("0.5",), [*NUM, "-0.5"]),
    "-hdivstep": (("0.1",), [*NUM, "0", "-0.1"]),
    "-hdivsteps": (("3",), [*INT, "0", "-3"]),
    "-vdivstep": (("0.1",), [*NUM, "0", "-0.1"]),
    "-vdivsteps": (("3",), [*INT, "0", "-3"]),
    "-divsteps": (("3",), [*INT, "0", "-3"]),
    "-adc": (("30",), [*NUM, "-1"]),
    "-phi": (("5",), [*NUM]),
    "-osc": (("1",), [*NUM]),
    "-phistep": (("0.1",), [*NUM]),
    "-phisteps": (("3",), [*INT, "0", "-3"]),
    "-dmin": (("2",), [*NUM, "-2"]),
    "-mat": (("x",), [*FILE]),
    "-hkl": (("x",), [*FILE]),
    "-default_F": (("10",), [*NUM, "-10"]),
    "-dump": (("x",), [*FILE]),
    "-stolout": (("x",), [*FILE]),
    "-stol": (("x",), [*FILE]),
    "-4stol": (("x",), [*FILE]),
    "-Q": (("x",), [*FILE]),
    "-sourcefile": (("x",), [*FILE]),
    "-floatfile": (("x",), [*FILE]),
    "-intfile": (("x",), [*FILE]),
    "-pgmfile": (("x",), [*FILE]),
    "-noisefile": (("x",), [*FILE]),
    "-scale": (("1",), [*NUM, "0", "-1"]),
    "-pgmscale": (("1",), [*NUM, "0", "-1"]),
    "-fudge": (("2",), [*NUM, "0", "-1"]),
    "-printout_pixel": (("3", "4"), [("3", "x"), ("nan", "4"), ("-1", "4")]),
    "-seed": (("5",), [*INT, "1e30"]),
    "-mosaic_seed": (("5",), [*INT, "1e30"]),
    "-misset_seed": (("5",), [*INT, "1e30"]),
    "-water": (("100",), [*NUM, "-1"]),
}

VALUED = [r for r in RULES if r.nargs > 0]


def test_every_rule_with_values_is_in_the_table():
    assert {r.patterns[0] for r in VALUED} == set(TABLE)


FIXED = [r for r in VALUED if r.patterns[0] != "-cell"]  # -cell takes 1 to 6 values, as in C


@pytest.mark.parametrize("rule", FIXED, ids=[r.patterns[0] for r in FIXED])
def test_flag_with_too_few_values(rule, cli_error):
    flag = rule.patterns[0]
    good = TABLE[flag][0]
    cli_error(BASE + [flag, *good[:-1]], flag, f"needs {rule.nargs} value")


BAD = [(flag, bad if isinstance(bad, tuple) else (bad,)) for flag, (_, bads) in TABLE.items() for bad in bads]


@pytest.mark.parametrize("flag, values", BAD, ids=[f"{f} {' '.join(v)}" for f, v in BAD])
def test_bad_value(flag, values, cli_error):
    cli_error(BASE + [flag, *values], flag)


@pytest.mark.parametrize(
    "flag, values",
    [
        (f, good)
        for f, (good, _) in TABLE.items()
        if f not in ("-img", "-mask", "-mat", "-hkl", "-stol", "-4stol", "-Q", "-sourcefile")
    ],
    ids=lambda x: x if isinstance(x, str) else " ".join(x),
)
def test_good_values_parse(flag, values, tmp_path):
    """A good value is read, not only taken: the run it makes differs from the run without it (its
    simulation or its outputs), but for the flags that mean nothing in this run (``INERT``)."""

    def made(argv):
        p = parse_nanobragg_args(argv, cwd=str(tmp_path))
        return json.dumps(p.simulation.to_dict(), sort_keys=True, default=str) + repr(p.outputs)

    changed = made(BASE + [flag, *values]) != made(BASE)
    assert changed == (flag not in INERT), (flag, values)


#: flags whose good value changes nothing in BASE's run (what they act on is absent there)
INERT = {
    "-density",
    "-molec",
    "-MW",  # the crystal's size from its mass: only with -xtalsize/-flux-type options
    "-Xclose",
    "-Yclose",
    "-ORGX",
    "-ORGY",  # the beam centre of other conventions (BASE: MOSFLM's)
    "-detector_thicksteps",
    "-thicksteps",  # layers of a sensor with no thickness
    "-exposure",
    "-beamsize",  # the fluence from -flux, not given
    "-mosaic_dom",
    "-mosaic_seed",  # domains of a crystal without mosaic spread
    "-dispsteps",  # wavelengths without -dispersion
    "-misset_seed",  # without -misset random
    "-dump",
    "-stolout",
    "-printout_pixel",  # the C program's debugging outputs, ignored
    "-pivot",  # a detector not rotated sits at the same place about either pivot
    "-detsize",
    "-detsize_f",
    "-detsize_s",  # BASE's -detpixels sets the size, as in C
}


@pytest.mark.parametrize(
    "extra",
    [
        ["-osc", "-1"],
        ["-phi", "-30"],
        ["-twotheta", "-10"],
        ["-mosaic", "0"],
        ["-mosaic_spread", "0"],
        ["-misset", "random"],
        ["-misset", "random", "-misset_seed", "42"],
        ["-detector_abs", "inf"],
        ["-detector_abs", "0"],
        ["-dmin", "0"],
        ["-detector_thick", "0"],
        ["-misset", "-9", "37", "-9"],
        ["-phistep", "0", "-osc", "1", "-phisteps", "3"],
        ["-Xbeam", "-20", "-Ybeam", "500"],
        ["-curved_det"],
        ["-polar", "-1"],
        ["-roi", "-5", "3", "10", "100"],
        ["-N", "2.0"],
        ["-default_F", "0", "-hkl", "F.hkl"],
        ["-dmin", "50"],
        ["-dmin", "0.7", "-Xbeam", "500"],
    ],
    ids=" ".join,
)
def test_what_the_c_program_renders_is_still_accepted(extra, tmp_path):
    (tmp_path / "F.hkl").write_text("0 0 0 10\n1 0 0 5\n")
    parse_nanobragg_args(BASE + extra, cwd=str(tmp_path))


def test_the_examples_of_the_issue(cli_error):
    cli_error(BASE + ["-cell", "-N", "5"], "-cell", "needs 1 to 6 values")
    cli_error(BASE + ["-mosaic_domains", "-3"], "-mosaic_domains", "-3")
    cli_error(BASE + ["-distance", "0"], "-distance")
    cli_error(BASE + ["-N", "0"], "-N")
    cli_error(BASE + ["-roi", "100", "200", "100", "200"], "-roi", "outside")
    cli_error(BASE + ["-hkl", "."], "-hkl", "folder")
    cli_error(BASE + ["-floatfile", "nowhere/f.bin"], "-floatfile", "does not exist")


# ----------------------------------------------------------------------------- input files


def smv(size1=16, size2=16, pixels=None, extra="", npix=None) -> bytes:
    head = f"{{\nHEADER_BYTES=512;\nSIZE1={size1};\nSIZE2={size2};\n{extra}}}\f".encode()
    head += b" " * (512 - len(head))
    if pixels is None:
        pixels = np.ones(16 * 16 if npix is None else npix, dtype="<u2")
    return head + np.asarray(pixels, dtype="<u2").tobytes()


BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage"
MAT_OK = "0.02 0 0\n0 0.02 0\n0 0 0.02\n"

FILE_CASES = [
    # (flag, content (None: missing, "DIR": a folder), needle after the name: ":line" or "")
    ("-hkl", None, ""),
    ("-hkl", "DIR", ""),
    ("-hkl", "", ""),
    ("-hkl", " \n\n", ""),
    ("-hkl", BINARY, ":1"),
    ("-hkl", "1 2 3\n", ":1"),
    ("-hkl", "0 0 0 1\n1 2 3 4 5\n", ":2"),
    ("-hkl", "0 0 0 1\n1 x 3 4\n", ":2"),
    ("-hkl", "0 0 0 1\n1 2 3 nan\n", ":2"),
    ("-hkl", "0 0 0 1\n1 2 3 4\n5 6", ":3"),
    ("-hkl", "0 0 0 1\n1 2 3\n4 5 6 7 8\n", ":2"),
    ("-hkl", "0 0 0 1\n1.5 0 0 2\n", ":2"),
    ("-hkl", "0 0 0 1\n0 0 1000000000 2\n", ":2"),
    ("-mat", None, ""),
    ("-mat", "DIR", ""),
    ("-mat", "", ""),
    ("-mat", BINARY, ":1"),
    ("-mat", "0.01 0 0\n0 0.01 0\n0 0\n1 2 3\n", ":3"),
    ("-mat", "0.01 0 0\n0 0.01 0\n", ":2"),
    ("-mat", "0.01 0 0 0\n0 0.01 0\n0 0 0.01\n", ":1"),
    ("-mat", "0.01 0 0\n0 abc 0\n0 0 0.01\n", ":2"),
    ("-mat", "0.01 0 0\n0.01 0 0\n0 0 0.01\n", ":3"),
    ("-mat", "0.01 0 0\n0 inf 0\n0 0 0.01\n", ":2"),
    ("-sourcefile", None, ""),
    ("-sourcefile", "DIR", ""),
    ("-sourcefile", "", ""),
    ("-sourcefile", BINARY, ":1"),
    ("-sourcefile", "-10 0 0 1 1e-10\n-10 0\n", ":2"),
    ("-sourcefile", "-10 0 0 1 1e-10 7\n", ":1"),
    ("-sourcefile", "-10 0 0 1 1e-10\n# a comment\n", ":2"),
    ("-sourcefile", "-10 0 0 1 nan\n", ":1"),
    ("-sourcefile", "0 0 0 1 1e-10\n", ":1"),
    ("-sourcefile", "-10 0 0 1 -1e-10\n", ":1"),
    ("-sourcefile", "-10 0 0 1 1e-10\n-10 0 0 1", ":2"),
    ("-stol", None, ""),
    ("-stol", "DIR", ""),
    ("-stol", "", ""),
    ("-stol", BINARY, ":1"),
    ("-stol", "0 2.5\n0.1\n", ":2"),
    ("-stol", "0 2.5\n0.1 2 3\n", ":2"),
    ("-stol", "0 2.5\n0.1 x\n", ":2"),
    ("-mask", None, ""),
    ("-mask", "DIR", ""),
    ("-mask", b"", ""),
    ("-mask", BINARY, ":1"),
    ("-mask", smv(npix=100), ""),
    ("-mask", smv(size1="abc"), ":3"),
    ("-mask", smv(extra="PIXEL_SIZE=0;\n"), ":5"),
    ("-mask", smv(pixels=np.zeros(256)), ""),
    ("-mask", smv(size1=8, npix=8 * 16), ""),
    ("-img", None, ""),
    ("-img", "DIR", ""),
    ("-img", b"", ""),
    ("-img", b"{\nnot a header", ":1"),
    ("-img", smv(npix=3), ""),
    ("-img", smv(extra="WAVELENGTH=-1;\n"), ":5"),
    ("-img", smv(extra="DISTANCE=0;\n"), ":5"),
]


@pytest.mark.parametrize("flag, content, where", FILE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FILE_CASES)])
def test_bad_input_file(flag, content, where, tmp_path, cli_error):
    name = "in.dat"
    if content == "DIR":
        (tmp_path / name).mkdir()
    elif content is not None:
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [a for a in BASE if a not in ("-cell",)] if flag == "-mat" else list(BASE)
    if flag == "-mat":  # the matrix replaces -cell
        i = BASE.index("-cell")
        argv = BASE[:i] + BASE[i + 7 :]
    cli_error(argv + [flag, name], flag, name + where)


def test_mask_and_roi_that_leave_nothing(tmp_path, cli_error):
    pixels = np.zeros((16, 16))
    pixels[:4, :4] = 1
    (tmp_path / "m.img").write_bytes(smv(pixels=pixels.ravel()))
    cli_error(BASE + ["-mask", "m.img", "-roi", "8", "15", "8", "15"], "-mask", "m.img", "masked")


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["-floatfile", "nowhere/f.bin"], ("-floatfile", "nowhere/f.bin", "does not exist")),
        (["-intimage", "nowhere/i.img"], ("-intimage", "does not exist")),
        (["-noisefile", "nowhere/n.img"], ("-noisefile", "does not exist")),
        (["-pgmfile", "nowhere/p.pgm"], ("-pgmfile", "does not exist")),
        (["-floatfile", "/proc/f.bin"], ("-floatfile", "not writable")),
        (["-floatfile", "sub"], ("-floatfile", "folder")),
        (["-floatfile", "notafolder/f.bin"], ("-floatfile", "not a folder")),
        (["-floatfile", "a.out", "-intfile", "a.out"], ("-intfile", "-floatfile", "a.out")),
        (["-floatfile", "a.out", "-noisefile", "./sub/../a.out"], ("-noisefile", "-floatfile")),
        (["-pgmfile", "intimage.img"], ("-pgmfile", "-intfile", "default")),
        (["-hkl", "F.hkl", "-floatfile", "F.hkl"], ("-floatfile", "F.hkl", "-hkl")),
        (["-sourcefile", "s.txt", "-intfile", "s.txt"], ("-intfile", "s.txt", "-sourcefile")),
        (["--zarr", "nowhere/s.zarr"], ("--zarr", "does not exist")),
        (["--zarr", "notafolder"], ("--zarr", "not a store folder")),
        (["--zarr", "x.zarr", "-floatfile", "x.zarr"], ("--zarr", "-floatfile")),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_bad_output(extra, needles, tmp_path, cli_error):
    (tmp_path / "sub").mkdir()
    (tmp_path / "notafolder").write_text("x")
    (tmp_path / "F.hkl").write_text("0 0 0 10\n1 0 0 5\n")
    (tmp_path / "s.txt").write_text("-10 0 0 1 1e-10\n")
    cli_error(BASE + extra, *needles)


# ----------------------------------------------------------------------------- nothing to render


@pytest.mark.parametrize(
    "extra, needles",
    [
        (
            ["-hdivrange", "1", "-hdivstep", "3", "-vdivrange", "1", "-vdivstep", "3"],
            ("-hdivrange", "-vdivstep", "-hdivrange 1 -hdivstep 3"),
        ),
        (["-oversample_thick"], ("-oversample_thick",)),
        (["-beam_vector", "0", "0", "1"], ("-beam_vector",)),
        (["-fdet_vector", "0", "1", "0", "-sdet_vector", "0", "1", "0"], ("-fdet_vector", "-sdet_vector")),
        (["-roi", "16", "20", "0", "15"], ("-roi", "outside")),
        (["-dmin", "3", "-Xbeam", "500"], ("-dmin", "culled")),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_a_run_with_nothing_to_render_names_the_flags(extra, needles, cli_error):
    cli_error(BASE + extra, *needles)


# ----------------------------------------------------------------------------- the Python API


@pytest.fixture(scope="module")
def sim():
    return parse_nanobragg_args(BASE).simulation


def _replace(obj, **kw):
    return dataclasses.replace(obj, **kw)


@pytest.mark.parametrize(
    "make, field, flag",
    [
        (lambda s: Source((1.0, 0.0, 0.0), math.nan), "wavelength_m", "-lambda"),
        (lambda s: Source((1.0, 0.0, 0.0), -1e-10), "wavelength_m", "-lambda"),
        (lambda s: Source((0.0, 0.0, 0.0), 1e-10), "incident", "-sourcefile"),
        (lambda s: Source((1.0, math.inf, 0.0), 1e-10), "incident", "-sourcefile"),
        (lambda s: _replace(s.beam, wavelength_m=math.inf), "wavelength_m", "-lambda"),
        (lambda s: _replace(s.beam, sources=()), "sources", "-divergence"),
        (lambda s: _replace(s.beam, fluence=0.0), "fluence", "-fluence"),
        (lambda s: _replace(s.beam, polarization=1.5), "polarization", "-polar"),
        (lambda s: _replace(s.beam, polarization=math.nan), "polarization", "-polar"),
        (lambda s: _replace(s.beam, beam_vector=(0.0, 0.0, 0.0)), "beam_vector", "-beam_vector"),
        (lambda s: _replace(s.crystal, n_cells=(2.5, 1, 1)), "n_cells", "-N"),
        (lambda s: _replace(s.crystal, n_cells=(0, 1, 1)), "n_cells", "-N"),
        (lambda s: _replace(s.crystal, n_cells=(1, 1)), "n_cells", "-N"),
        (lambda s: _replace(s.crystal, a_m=(math.nan, 0.0, 0.0)), "a_m", "-cell"),
        (lambda s: _replace(s.crystal, c_m=s.crystal.a_m), "a_m", "-cell"),
        (lambda s: _replace(s.crystal, fudge=0.0), "fudge", "-fudge"),
        (lambda s: _replace(s.crystal, phi0_rad=math.nan), "phi0_rad", "-phi"),
        (lambda s: _replace(s.crystal, osc_rad=math.inf), "osc_rad", "-osc"),
        (lambda s: _replace(s.crystal, phisteps=0), "phisteps", "-phisteps"),
        (lambda s: _replace(s.crystal, mosaic_spread_rad=-0.1), "mosaic_spread_rad", "-mosaic_spread"),
        (lambda s: _replace(s.crystal, mosaic_umats=(((1.0, 0.0), (0.0, 1.0)),)), "mosaic_umats", "-mosaic_domains"),
        (lambda s: _replace(s.crystal, spindle_axis=(0.0, 0.0, 0.0)), "spindle_axis", "-spindle_axis"),
        (lambda s: _replace(s.crystal, shape="cube"), "shape", "-round_xtal"),
        (lambda s: _replace(s.detector, fpixels=0), "fpixels", "-detpixels_x"),
        (lambda s: _replace(s.detector, pixel_size_m=math.nan), "pixel_size_m", "-pixel"),
        (lambda s: _replace(s.detector, oversample=1.5), "oversample", "-oversample"),
        (lambda s: _replace(s.detector, thickness_m=-1e-6), "thickness_m", "-detector_thick"),
        (lambda s: _replace(s.detector, mu_per_m=math.nan), "mu_per_m", "-detector_abs"),
        (lambda s: _replace(s.detector, thicksteps=0), "thicksteps", "-detector_thicksteps"),
        (lambda s: _replace(s.detector, roi=(5, 1, 0, 3)), "roi", "-roi"),
        (lambda s: _replace(s.detector, roi=(100, 200, 0, 3)), "roi", "-roi"),
        (lambda s: _replace(s.detector, mask=np.ones((3, 16), bool)), "mask", "-mask"),
        (lambda s: _replace(s.detector, oversample_thick=True), "oversample_thick", "-oversample_thick"),
        (lambda s: _replace(s, water_size_m=-1.0), "water_size_m", "-water"),
        (lambda s: _replace(s, dmin_m=math.nan), "dmin_m", "-dmin"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_config_classes_refuse_what_the_cli_refuses(sim, make, field, flag):
    with pytest.raises(ConfigError) as info:
        make(sim)
    assert info.value.field == field and info.value.flag == flag
    assert field in str(info.value) and flag in str(info.value)


def test_config_classes_accept_a_valid_simulation(sim):
    again = _replace(sim, crystal=_replace(sim.crystal, phi0_rad=-0.5, osc_rad=-0.1))
    assert again.crystal.phi0_rad == -0.5
    assert _replace(sim.detector, roi=(-5, 3, 0, 100)).roi_bounds == (0, 3, 0, 15)


# ----------------------------------------------------------------------------- found by the bad-input corpus


@pytest.mark.parametrize(
    "flag, value",
    [
        ("-distance", "1_0"),
        ("-distance", "0x10"),
        ("-distance", "1,5"),
        ("-distance", "\u0661\u0660\u0660"),
        ("-distance", "1d3"),
        ("-distance", "1e"),
        ("-distance", " "),
        ("-N", "1_0"),
        ("-N", "\u0663"),
        ("-detpixels", "1_6"),
        ("-phi", "Infinity"),
        ("-detector_abs", "1_0"),
        ("-roi", "0 7 0 1_0"),
    ],
    ids=lambda x: ascii(x),
)
def test_numbers_python_reads_but_c_does_not(flag, value, cli_error):
    """float()/int() take '1_0', other scripts' digits, hex is not C's atoi: all refused, not misread."""
    cli_error(BASE + [flag, *value.split(" ")] if flag == "-roi" else BASE + [flag, value], flag)


@pytest.mark.parametrize(
    "value, number",
    [("+3", 3.0), (" 3", 3.0), ("3 ", 3.0), (".5e1", 5.0), ("3.", 3.0), ("-0", 0.0), ("1e1", 10.0), ("2.5E-1", 0.25)],
)
def test_c_style_numbers_are_read(value, number, tmp_path):
    """What C's atof reads, read as the same number: an angle, a length and a count."""
    import math

    sim = parse_nanobragg_args(BASE + ["-phi", value], cwd=str(tmp_path)).simulation
    assert (
        sim.crystal.phi0_rad == number / (180.0 / math.pi)
        and math.copysign(  # x/RTD, as C
            1.0, sim.crystal.phi0_rad + 0.0
        )
        == 1.0
    )
    if number > 0:
        sim = parse_nanobragg_args(BASE + ["-distance", value], cwd=str(tmp_path)).simulation
        assert sim.detector.geometry.distance_m == pytest.approx(number / 1000.0, rel=1e-15)
    if number >= 1 and number == int(number) and "." not in value and "e" not in value.lower():
        sim = parse_nanobragg_args(BASE + ["-N", value], cwd=str(tmp_path)).simulation
        assert tuple(sim.crystal.n_cells) == (int(number),) * 3


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "x\x1by"], ids=ascii)
def test_error_naming_a_file_with_a_line_break_stays_one_line(name, cli_error):
    cli_error(BASE + ["-hkl", name], "-hkl", "file not found")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["-cell", "1e308", "50", "50", "90", "90", "90"], ("-cell", "range")),
        (["-cell", "5e-324", "50", "50", "90", "90", "90"], ("-cell", "range")),
        (["-cell", "1e90", "1e90", "1e90", "90", "90", "90"], ("-cell", "range")),
        (["-samplesize", "1e308"], ("-samplesize", "unit cells")),
        (["-xtal_thick", "1e300"], ("-xtal_thick", "unit cells")),
        (["-oversample", "2147483647"], ("-oversample", "memory")),
        (["-oversample", "100000"], ("-oversample", "memory")),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_sizes_beyond_what_a_run_can_hold(extra, needles, cli_error):
    cli_error(BASE + extra, *needles)


@pytest.mark.parametrize("extra", [["-N", "1000000"], ["-samplesize", "2.5"]], ids=" ".join)
def test_an_automatic_oversample_beyond_memory_names_the_crystal(extra, cli_error):
    argv = [a for i, a in enumerate(BASE) if a != "-oversample" and BASE[i - 1] != "-oversample"]
    cli_error(argv + extra, "automatic", "memory", extra[0])


@pytest.mark.parametrize(
    "flag, content, where",
    [
        ("-hkl", "0 0 0 1\n1_0 0 0 2\n", ":2"),
        ("-hkl", "0 0 0 1\n1 0 0 0x10\n", ":2"),
        ("-hkl", "0 0 0 1\n\u0661 0 0 2\n", ":2"),
        ("-hkl", "0 0 0 1\n1 0 0 1_0\n", ":2"),
        ("-mat", "0.02 0 0\n0 1_0 0\n0 0 0.02\n", ":2"),
        ("-sourcefile", "-1_0 0 0 1 1e-10\n", ":1"),
        ("-stol", "0 1\n0.1 2_0\n", ":2"),
    ],
    ids=lambda x: ascii(x) if isinstance(x, str) and "\n" in x else x,
)
def test_file_numbers_python_reads_but_c_does_not(flag, content, where, tmp_path, cli_error):
    (tmp_path / "in.dat").write_text(content)
    argv = list(BASE)
    if flag == "-mat":
        i = BASE.index("-cell")
        argv = BASE[:i] + BASE[i + 7 :]
    cli_error(argv + [flag, "in.dat"], flag, "in.dat" + where)


@pytest.mark.parametrize(
    "content",
    ["0 0 0 10\r\n1 0 0 20\r\n", "0\t0\t0\t10\n1 0\t0  20\n", "0 0 0 10\n1 0 0 20"],
    ids=["crlf", "tabs", "no-final-newline"],
)
def test_hkl_layouts_the_c_program_reads(content, tmp_path):
    (tmp_path / "F.hkl").write_text(content, newline="")
    sf = parse_nanobragg_args(BASE + ["-hkl", "F.hkl"], cwd=str(tmp_path)).simulation.crystal.structure_factors
    assert sf.n_records == 2


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["-Xbeam", "1e308"], ("-Xbeam", "solid angle")),
        (["-Ybeam", "-1e300"], ("-Ybeam", "solid angle")),
        (["-distance", "1e300"], ("-distance", "solid angle")),
        (["-pixel", "1e-300"], ("-pixel", "solid angle")),
        (["-pixel", "1e298"], ("-pixel", "infinite")),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_a_detector_out_of_floating_point_reach(extra, needles, cli_error):
    cli_error(BASE + extra, *needles)


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["-pixel", "1e308"], ("-pixel",)),
        (["-lambda", "1e-308"], ("-lambda",)),
        (["-energy", "1e308"], ("-energy",)),
        (["-detector_abs", "5e-324"], ("-detector_abs",)),
        (["-fluence", "1e308"], ("-fluence", "overflow")),
        (["-default_F", "1e300"], ("-default_F", "overflow")),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else None,
)
def test_values_whose_arithmetic_overflows(extra, needles, cli_error):
    cli_error(BASE + extra, *needles)


@pytest.mark.parametrize("flag", ["-floatfile", "-intfile", "-pgmfile", "--zarr"])
def test_an_output_name_longer_than_the_file_system_allows(flag, cli_error):
    cli_error(BASE + [flag, "x" * 256], flag, "longer than")


def test_an_output_name_near_the_limit_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(BASE + ["-floatfile", "f" * 255, "-nonoise", "-nopgm"]) == 0
    assert (tmp_path / ("f" * 255)).stat().st_size == 16 * 16 * 4


@pytest.mark.parametrize("target", ["/dev/full", "/dev/zero", "fifo"])
def test_an_output_onto_a_device_or_fifo_is_refused_and_the_node_kept(target, tmp_path, cli_error):
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
    before = os.stat(target if target.startswith("/") else tmp_path / target)
    cli_error(BASE + ["-floatfile", target], "-floatfile", "not a regular file")
    after = os.stat(target if target.startswith("/") else tmp_path / target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


def test_dev_null_takes_an_output_and_stays_a_device(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = os.stat(os.devnull)
    assert main(BASE + ["-floatfile", os.devnull, "-nonoise", "-nopgm"]) == 0
    after = os.stat(os.devnull)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_an_input_that_is_a_device_or_fifo_is_refused(source, tmp_path, cli_error):
    if source == "fifo":
        os.mkfifo(tmp_path / "fifo")
    cli_error(BASE + ["-hkl", source], "-hkl", "not a regular file")


def test_an_output_through_a_symbolic_link_keeps_the_link(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real.bin").write_bytes(b"old")
    os.symlink("real.bin", tmp_path / "link.bin")
    assert main(BASE + ["-floatfile", "link.bin", "-nonoise", "-nopgm"]) == 0
    assert os.path.islink(tmp_path / "link.bin") and (tmp_path / "real.bin").stat().st_size == 16 * 16 * 4


@pytest.mark.parametrize(
    "short, full",
    [
        (["50"], ["50", "50", "50", "90", "90", "90"]),
        (["50", "60"], ["50", "60", "50", "90", "90", "90"]),
        (["50", "60", "70"], ["50", "60", "70", "90", "90", "90"]),
        (["50", "60", "70", "80"], ["50", "60", "70", "80", "90", "90"]),
        (["50", "60", "70", "80", "85"], ["50", "60", "70", "80", "85", "90"]),
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("where", ["first", "last"])
def test_cell_takes_fewer_values_as_the_c_program_does(short, full, where):
    """-cell's values stop at the next flag (or the end); those not given: b = a, c = a, angles 90."""
    rest = [a for a in BASE[7:]]
    argv_short = (["-cell", *short] + rest) if where == "first" else (rest + ["-cell", *short])
    argv_full = ["-cell", *full] + rest
    a = parse_nanobragg_args(argv_short).simulation
    b = parse_nanobragg_args(argv_full).simulation
    assert a.fingerprint() == b.fingerprint()
    assert a.crystal.a_m == b.crystal.a_m and a.crystal.c_m == b.crystal.c_m


@pytest.mark.parametrize(
    "flag, value",
    [("-pixel", "1e300"), ("-pixel", "1e30"), ("-lambda", "1e-200"), ("-wavelength", "1e-100"), ("-energy", "1e200")],
    ids=lambda v: str(v),
)
def test_huge_finite_values_are_blamed_on_their_own_flag(flag, value, cli_error):
    """Finite values that no run can hold (the automatic oversampling, a solid angle): one line that names
    the flag (not only -cell/-N), never an OverflowError."""
    i = BASE.index("-oversample")
    line = cli_error(BASE[:i] + BASE[i + 2 :] + [flag, value])
    assert flag in line.split(": ")[2].split("/"), line


def _smv(path, pixels: np.ndarray, type_line: str | None, order: str = "little_endian") -> None:
    """A minimal SMV image of ``pixels`` (``(rows, cols)``, already of the type ``type_line`` names)."""
    lines = (
        [
            "{",
            "HEADER_BYTES=512;",
            "DIM=2;",
            f"BYTE_ORDER={order};",
            f"SIZE1={pixels.shape[1]};",
            f"SIZE2={pixels.shape[0]};",
            "PIXEL_SIZE=0.2;",
        ]
        + ([f"TYPE={type_line};"] if type_line else [])
        + ["}"]
    )
    head = "\n".join(lines).encode() + b"\n"
    path.write_bytes(head + b" " * (512 - len(head)) + pixels.tobytes())


@pytest.mark.parametrize(
    "type_line, dtype, order",
    [
        ("float", "<f4", "little_endian"),
        ("float", ">f4", "big_endian"),
        ("unsigned_int", "<u4", "little_endian"),
        ("signed_short", "<i2", "little_endian"),
    ],
)
def test_a_mask_is_read_as_the_type_its_header_names(type_line, dtype, order, tmp_path):
    """A mask of TYPE=float (or another type) masks the pixels that are 0 in that type, exactly as the
    same mask in unsigned_short; read as unsigned shorts (the C program's way) its 1.0 would read 0."""
    rng = np.random.default_rng(2)
    keep = rng.random((16, 16)) > 0.3
    _smv(tmp_path / "m.img", keep.astype(dtype), type_line, order)
    _smv(tmp_path / "u.img", keep.astype("<u2"), None)
    a = parse_nanobragg_args(BASE + ["-mask", "m.img"], cwd=str(tmp_path)).simulation
    b = parse_nanobragg_args(BASE + ["-mask", "u.img"], cwd=str(tmp_path)).simulation
    assert np.array_equal(a.detector.mask, keep) and a.fingerprint() == b.fingerprint()


def test_a_mask_of_a_type_that_cannot_be_read_is_one_line(cli_error, tmp_path):
    _smv(tmp_path / "m.img", np.ones((16, 16), "<f8"), "double_complex")
    line = cli_error(BASE + ["-mask", "m.img"], "m.img", "TYPE=double_complex")
    assert ":8:" in line or "line 8" in line, line
    nan = np.ones((16, 16), "<f4")
    nan[3, 4] = np.nan
    _smv(tmp_path / "n.img", nan, "float")
    cli_error(BASE + ["-mask", "n.img"], "n.img", "NaN")


@pytest.mark.parametrize(
    "extra, flag, needle",
    [
        (["--overwrite"], "--overwrite", "without --zarr"),
        (["--orientation-seed", "3"], "--orientation-seed", "without it"),
        (["--zarr", "s.zarr", "--frames", "2", "--orientation-seed", "3"], "--orientation-seed", "without it"),
        (["--workers", "2"], "--workers", "computes in this process"),
        (["--worker-processes"], "--worker-processes", "computes in this process"),
        (["--listen", "127.0.0.1"], "--listen", "computes in this process"),
        (["--dashboard-address", "none"], "--dashboard-address", "computes in this process"),
        (["--tls-ca-file", "ca.pem"], "--tls-ca-file", "computes in this process"),
        (["--connect-timeout", "3"], "--connect-timeout", "there is none"),
        (["--zarr", "s.zarr", "--connect-timeout", "3"], "--connect-timeout", "there is none"),
        (
            ["--zarr", "s.zarr", "--tls-ca-file", "nope.pem", "--tls-cert", "c.pem"],
            "--tls-ca-file",
            "no such file nope.pem",
        ),
        (["--zarr", "s.zarr", "--tls-ca-file", ".", "--tls-cert", "c.pem"], "--tls-ca-file", "not a file"),
        (["--scheduler-file", "nope.json"], "--scheduler-file", "no scheduler file nope.json"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_options_that_apply_to_nothing_are_refused(extra, flag, needle, cli_error):
    """An option this run would ignore (or whose file is missing) is a one-line error naming it, before any
    output or store."""
    cli_error(BASE + extra, f"{flag}: ", needle)


BAD_NUMBERS = ["nan", "inf", "-inf", "-1", "1e400"]


@pytest.mark.parametrize("flag", ["--psf-fwhm", "--psf-radius", "--readout", "--flicker", "--calibration", "--gain"])
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_detector_model_options_refuse_garbage_before_any_store(flag, value, cli_error):
    """Every detector-model option of a run: NaN, infinities, negative and overflowing values are one
    line naming the option as typed, before the store is made."""
    cli_error(BASE + ["--zarr", "s.zarr", "--psf", "gauss", flag, value], f"{flag}: ")


NOISIFY_NUMBERS = [
    "-scale",
    "-fluence",
    "-gain",
    "-adc",
    "-psf_fwhm",
    "-psf_size",
    "-psf_sigma",
    "-psf_radius",
    "-psf_rad",
    "-pixel",
    "-distance",
    "-lambda",
    "-Xbeam",
    "-Ybeam",
    "-phi",
    "-osc",
    "-readout",
    "-readnoise",
    "-flicker",
    "-calibration",
    "-detsize",
]


@pytest.mark.parametrize("flag", NOISIFY_NUMBERS)
@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_noisify_options_refuse_garbage_naming_the_flag_as_typed(flag, value, cli_error, tmp_path):
    np.ones(16 * 16, "<f4").tofile(tmp_path / "f.bin")
    cli_error(["noisify", "-floatfile", "f.bin", "-detpixels", "16", flag, value], f"{flag}: ")


@pytest.mark.parametrize("flag", ["-detpixels", "-seed", "-calib_seed", "--tile", "-bits"])
def test_noisify_counts_refuse_absurd_values(flag, cli_error, tmp_path):
    np.ones(16 * 16, "<f4").tofile(tmp_path / "f.bin")
    for value in ([] if "seed" in flag else ["-5"]) + [str(2**64)] + (["0"] if flag in ("--tile", "-bits") else []):
        args = ["noisify", "-floatfile", "f.bin"] + ([] if flag == "-detpixels" else ["-detpixels", "16"])
        cli_error(args + [flag, value], f"{flag}: ")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -2.0])
def test_noisify_refuses_a_float_image_that_holds_no_photon_counts(value, cli_error, tmp_path):
    img = np.ones(16 * 16, "<f4")
    img[37] = value
    img.tofile(tmp_path / "f.bin")
    cli_error(["noisify", "-floatfile", "f.bin", "-detpixels", "16"], "-floatfile: ", "f.bin", "value 37")


def _finest_pixel_d(argv) -> float:
    """The largest d (m) over every pixel centre of a run (oversample 1, one layer, one source), computed
    here from the detector's own geometry: what -dmin must stay under for anything to render."""
    sim = parse_nanobragg_args(argv).simulation
    det, g = sim.detector, sim.detector.geometry
    assert det.oversample == 1 and det.thicksteps == 1 and len(sim.beam.sources) == 1
    s, f = np.meshgrid(np.arange(det.spixels) + 0.5, np.arange(det.fpixels) + 0.5, indexing="ij")
    pos = (
        np.asarray(g.pix0_m)
        + (f[..., None] * np.asarray(g.fdet) + s[..., None] * np.asarray(g.sdet)) * det.pixel_size_m
    )
    unit = pos / np.linalg.norm(pos, axis=-1, keepdims=True)
    src = sim.beam.sources[0]
    return float(1.0 / (np.linalg.norm(unit - np.asarray(src.incident), axis=-1).min() / src.wavelength_m))


@pytest.mark.parametrize("beam", [["-Xbeam", "500"], ["-Ybeam", "-40", "-Xbeam", "-3"]], ids=" ".join)
def test_dmin_just_beyond_every_pixel_is_refused_and_just_within_renders(beam, cli_error):
    """Within 5% of the finest pixel the coarse test cannot tell: every evaluated point is then put through
    the kernel's own cut.  1% beyond every pixel centre: refused (not an all-zero image); 1% within: the
    run renders the pixels that pass."""
    from bragg_dask.executors.serial import run_serial
    from bragg_dask.planning.plan import plan_tiles

    argv = BASE + beam
    d = _finest_pixel_d(argv)
    cli_error(argv + ["-dmin", repr(d * 1.01 * 1e10)], "-dmin", "all zero")
    sim = parse_nanobragg_args(argv + ["-dmin", repr(d * 0.99 * 1e10)]).simulation
    image = run_serial(sim, plan_tiles(*sim.detector.shape, 8)).image
    assert np.count_nonzero(image) > 0


@pytest.mark.parametrize(
    "extra, flag, what",
    [
        (["-phisteps", str(2**31 - 1)], "-phisteps", "crystal orientations"),
        (["-mosaic_domains", str(2**31 - 1), "-mosaic_spread", "0.1"], "-mosaic_domains", "crystal orientations"),
        (["-osc", "1", "-phistep", "1e-12"], "-phistep", "crystal orientations"),
        (
            ["-phisteps", "200000", "-mosaic_domains", "200000", "-mosaic_spread", "1"],
            "-phisteps",
            "crystal orientations",
        ),
        (["-dispersion", "10", "-dispsteps", str(2**31 - 1)], "-dispsteps", "sources"),
        (["-divergence", "1", "-hdivsteps", "100000", "-vdivsteps", "100000"], "-hdivsteps", "sources"),
        (
            ["-detector_thick", "100", "-detector_thicksteps", str(2**31 - 1)],
            "-detector_thicksteps",
            "sub-pixel points",
        ),
        (["-oversample", str(2**31 - 1)], "-oversample", "sub-pixel points"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_counts_no_run_can_hold_are_refused_at_once_naming_their_flag(extra, flag, what, cli_error):
    """Every count flag at 2^31 (and products of counts): one line naming the flag and the figures, within
    seconds and before any table of that size is made (no MemoryError, no hang)."""
    import time

    t0 = time.perf_counter()
    line = cli_error(BASE + extra, what, "budget")
    assert flag in line.split(": ")[2].split("/"), line
    assert time.perf_counter() - t0 < 10
