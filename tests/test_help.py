"""``bragg-dask --help``: every flag (the C program's rule table, the service and export parsers),
with its meaning, unit and default; the help cannot fall behind the tables."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from bragg_dask.cli import flaghelp, main, service_parser
from bragg_dask.cli.export import _parser as export_parser
from bragg_dask.nanobragg.args import RULES, RawParams, Rule, parse_raw


@pytest.fixture(scope="module")
def help_out() -> str:
    """The help as the command prints it (in-process, a fixed width)."""
    import contextlib
    import io

    buf = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(buf):
            assert main(["--help"]) == 0
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return buf.getvalue()


def test_every_rule_has_a_help_entry():
    assert flaghelp.missing_entries() == []
    for rule in RULES:
        entry = flaghelp.C_FLAGS[rule.patterns[0]]
        assert entry.section in flaghelp.SECTIONS
        assert entry.unit.strip() and entry.default.strip() and entry.text.strip(), rule.patterns
        assert len(entry.values.split()) == rule.nargs, (rule.patterns, entry.values)


def test_no_entry_without_a_rule():
    assert set(flaghelp.C_FLAGS) == {r.patterns[0] for r in RULES}


def test_a_rule_without_help_fails():
    extra = RULES + (Rule(("-no_such_flag",), 1, lambda p, f, v: None),)
    assert flaghelp.missing_entries(extra) == ["-no_such_flag"]
    with pytest.raises(KeyError, match="-no_such_flag"):
        flaghelp.c_flags_help(rules=extra)


def test_value_names_follow_nargs():
    wrong = Rule(("-distance",), 2, RULES[0].handler)
    assert flaghelp.missing_entries((wrong,)) == ["-distance"]


@pytest.mark.parametrize(
    "flag,attr",
    [
        ("-distance", "distance"),
        ("-pixel", "pixel_size"),
        ("-detsize", "detsize_f"),
        ("-lambda", "lambda0"),
        ("-beamsize", "beamsize"),
        ("-exposure", "exposure"),
        ("-adc", "adc"),
        ("-polar", "polarization"),
        ("-fudge", "fudge"),
        ("-detector_thick", "detector_thick"),
        ("-water", "water"),
        ("-phi", "phi0"),
        ("-dispersion", "dispersion"),
        ("-default_F", "default_F"),
    ],
)
def test_documented_default_in_its_unit_is_the_default(flag, attr):
    """The default the help gives, read back through the flag (so in the flag's unit), is RawParams'."""
    value = flaghelp.C_FLAGS[flag].default.split()[0]
    p = parse_raw([flag, value])
    assert math.isclose(getattr(p, attr), getattr(RawParams(), attr), rel_tol=1e-12)


def test_units_of_converted_flags(help_out):
    lines = {ln.split()[0]: ln for ln in help_out.splitlines() if ln.startswith("  -")}
    for flag, unit in (
        ("-distance", "mm"),
        ("-lambda,", "Angstrom"),
        ("-phi", "deg"),
        ("-osc", "deg"),
        ("-hdivrange", "mrad"),
        ("-detector_thick", "um"),
        ("-dispersion", "percent"),
        ("-energy", "eV"),
        ("-fluence", "photons/m^2"),
        ("-water", "um"),
        ("-dmin", "Angstrom"),
    ):
        assert f"({unit};" in lines[flag], lines[flag]


def test_every_service_flag_has_help(help_out):
    for action in service_parser()._actions:
        assert action.help and action.help.strip(), action.option_strings
        for opt in action.option_strings:
            line = next(
                ln
                for ln in help_out.splitlines()
                if opt in [t.rstrip(",") for t in ln.split()[: len(action.option_strings)]]
            )
            assert len(line.split()) > 2, line


def test_every_alias_and_export_flag_is_listed(help_out):
    for rule in RULES:
        for pattern in rule.patterns:
            assert pattern in help_out, pattern
    for action in export_parser()._actions:
        for opt in action.option_strings:
            assert f"  {opt} " in help_out, opt


def test_rules_in_table_order_within_sections(help_out):
    starts = [help_out.index(f"nanoBragg flags: {s}:") for s in flaghelp.SECTIONS]
    assert starts == sorted(starts)
    for section in flaghelp.SECTIONS:
        firsts = [r.patterns[0] for r in RULES if flaghelp.C_FLAGS[r.patterns[0]].section == section]
        block = help_out[help_out.index(f"nanoBragg flags: {section}:") :]
        block = block[: block.index("\n\n")] if "\n\n" in block else block
        listed = [ln.split()[0].rstrip(",").split("[")[0] for ln in block.splitlines()[1:] if ln.startswith("  -")]
        assert listed == firsts


def test_help_command_exits_0():
    env = dict(os.environ, COLUMNS="200")
    r = subprocess.run(
        [sys.executable, "-m", "bragg_dask", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr == ""
    out = r.stdout
    for word in (
        "usage: bragg-dask",
        "-distance",
        "mm",
        "-lambda",
        "Angstrom",
        "--zarr",
        "--tile",
        "export",
        "-floatfile",
        "--scheduler",
    ):
        assert word in out, word
    lines = out.splitlines()
    assert len(lines) < 250
    assert max(len(ln) for ln in lines) <= 120


def test_narrow_width_wraps():
    text = flaghelp.c_flags_help(width=72)
    assert max(len(ln) for ln in text.splitlines()) <= 72


@pytest.mark.parametrize("name", ["export", "preview", "noisify"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_subcommand_has_its_help(name, flag, capsys):
    """``bragg-dask SUB --help``: exit 0, the usage, and every flag the subcommand takes with a meaning."""
    import argparse

    from bragg_dask.cli.preview import _parser as preview_parser
    from bragg_dask.detector.flags import SWITCH as _SWITCH
    from bragg_dask.detector.flags import VALUE as _VALUE

    assert main([name, flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bragg-dask {name} ")
    if name == "noisify":
        flags = [s for spellings, _ in _VALUE.values() for s in spellings] + list(_SWITCH) + ["--frame", "--all-frames"]
    else:
        parser = export_parser() if name == "export" else preview_parser()
        flags = [o for a in parser._actions for o in a.option_strings]
        assert all(isinstance(a, argparse.Action) for a in parser._actions)
    for f in flags:
        line = next((ln for ln in out.splitlines() if f" {f}" in f" {ln.strip()}"), None)
        assert line is not None, f
    assert "default: none" not in out.split("-o, --output")[-1].splitlines()[0] if name == "preview" else True
