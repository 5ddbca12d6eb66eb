"""The main command's detectors of panels: ``--panels FILE.json``, ``--geometry FILE`` (NXmx, DIALS,
CrystFEL) and ``--detector NAME`` (a preset), each checked against the C program's flags and the run's
options, into the parsed run (:func:`bragg_dask.io.panels.with_panels`).

Part of :mod:`bragg_dask.cli`.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from bragg_dask.errors import UsageError

log = logging.getLogger("bragg_dask")


def with_detector(parsed, opts):
    """``parsed`` on the detector of ``--panels FILE``, ``--geometry FILE`` or ``--detector NAME`` (checked:
    the file, the C flags it contradicts, what the run asks of it)."""
    given = [(flag, v) for flag, v in (("--panels", opts.panels), ("--geometry", opts.geometry),
                                       ("--detector", opts.detector)) if v is not None]  # fmt: skip
    if not given:
        return parsed
    if len(given) > 1:
        raise UsageError(f"give one detector: {given[0][0]} or {given[1][0]}, not both", flag=given[1][0])
    flag, value = given[0]
    if not value.strip():
        raise UsageError("needs a value", flag=flag)
    from bragg_dask.io.panels import read_panels, with_panels
    from bragg_dask.nanobragg.args import parse_nanobragg_args
    from bragg_dask.nanobragg.checks import check_panel_flags

    c_args = list(opts.c_args)
    frame = None
    if flag == "--detector":
        from bragg_dask.io.presets import preset, preset_frame, preset_panels

        found = preset(value)  # (an unknown name: one line listing the known ones)
        check_panel_flags(parsed.raw, flag, placed=True)
        # the preset's whole frame as the C program's single detector, placed by its flags as usual
        whole = ["-detpixels_x", str(found.n_fast_total), "-detpixels_y", str(found.n_slow_total)]
        parsed = parse_nanobragg_args([*whole, "-pixel", repr(found.pixel_m * 1e3), *c_args], cwd=os.getcwd())
        panels = preset_panels(found, parsed.simulation.detector.geometry)
        frame = preset_frame(found)
    else:
        check_panel_flags(parsed.raw, flag)
        if flag == "--panels":
            panels = read_panels(value)
        else:
            from bragg_dask.io.geometry_files import read_geometry

            geo = read_geometry(value)
            panels = geo.panels
            parsed = _file_beam(parsed, geo, c_args)
    if opts.parity == "c" and len(panels) > 1:
        raise UsageError(
            "the C program has one panel: --parity c reproduces a single-panel detector only "
            "(a detector of panels runs in spec mode, which is exact)",
            flag="--parity",
        )
    oversample = parsed.raw.oversample if parsed.raw.oversample > 0 else None
    sim = with_panels(parsed.simulation, panels, oversample, flag, frame)
    return dataclasses.replace(parsed, simulation=sim)


def _file_beam(parsed, geo, c_args: list[str]):
    """``parsed`` with the beam direction and wavelength of a geometry file where it has them, unless the
    command line gives its own (``-beam_vector``; ``-lambda``, ``-wave``, ``-energy``)."""
    from bragg_dask.nanobragg.args import parse_nanobragg_args

    typed = [arg for arg, _ in parsed.raw.flags]
    extra: list[str] = []
    if geo.beam_vector is not None and not any("-beam_vector" in a for a in typed):
        extra += ["-beam_vector", *(repr(float(x)) for x in geo.beam_vector)]
    if geo.wavelength_m is not None and not any(k in a for a in typed for k in ("-lambda", "-wave", "-energy")):
        extra += ["-lambda", repr(geo.wavelength_m * 1e10)]
    if not extra:
        return parsed
    for name in ("-beam_vector", "-lambda"):
        if name in extra:
            log.info("%s from %s", name, geo.source)
    return parse_nanobragg_args([*extra, *c_args], cwd=os.getcwd())
