"""Checks made before any computation starts: every output can be written, and none clobbers another.

An output (``-floatfile``, ``-intfile``, ``-noisefile``, ``-pgmfile``, the ``--zarr`` store, and the
subcommands' outputs) is refused when its folder does not exist or cannot be written, when it names a
folder, when it lies inside a Zarr store, when two outputs share a path, or when an output would
overwrite one of the run's input files.  Each error
names the flag; the C program would compute for minutes and then fail (or silently overwrite).
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
import tempfile
from typing import TYPE_CHECKING

from bragg_dask.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bragg_dask.nanobragg.params import ParsedArgs, RawParams
    from bragg_dask.nanobragg.stats import ImageStats

OUTPUT_FLAGS = (
    ("floatfile", "-floatfile"),
    ("intfile", "-intfile"),
    ("pgmfile", "-pgmfile"),
    ("noisefile", "-noisefile"),
)
INPUT_FLAGS = (("hklfile", "-hkl"), ("matfile", "-mat"), ("sourcefile", "-sourcefile"), ("stolfile", "-stol"))


def _key(path: str) -> str:
    """What two names of one file have in common: the real, case-normalised path."""
    return os.path.normcase(os.path.realpath(path))


def _writable_folder(folder: str) -> bool:
    """Can a file be created in ``folder``?  Tried for real (permission bits lie to root, and to
    read-only mounts)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".bragg-dask-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return True


def _is_devnull(path: str) -> bool:
    """Is ``path`` the null device (the one special file an output may name)?"""
    try:
        return os.path.samefile(path, os.devnull) and stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _check_target(flag: str, name: str, path: str, *, folder_ok: bool = False) -> None:
    """Can ``path`` be written (``folder_ok``: a store folder, existing or to be made)?  Else a
    :class:`ConfigError` naming ``flag``."""
    if not name:
        raise ConfigError("empty file name", flag=flag)
    if os.path.isdir(path) and not folder_ok:
        raise ConfigError(f"{name} is a folder, not a file", flag=flag)
    if folder_ok and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{name} is a file, not a store folder", flag=flag)
    if not folder_ok and os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode) and not _is_devnull(path):
        raise ConfigError(
            f"cannot write {name}: it is a device, FIFO or socket, not a regular file "
            f"({os.devnull} alone is taken, to discard an output)",
            flag=flag,
        )
    if folder_ok and os.path.isdir(path):  # an existing store is written inside
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write into {name}: the folder is not writable", flag=flag)
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):
        raise ConfigError(f"cannot write {name}: folder {parent} does not exist", flag=flag)
    if not os.path.isdir(parent):
        raise ConfigError(f"cannot write {name}: {parent} is not a folder", flag=flag)
    if not _writable_folder(parent):
        raise ConfigError(f"cannot write {name}: folder {parent} is not writable", flag=flag)
    base = os.fsencode(os.path.basename(os.path.abspath(path)))
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(base) > name_max:
        raise ConfigError(
            f"cannot write {name}: a file name of {len(base)} bytes is longer than the "
            f"{name_max} the file system allows",
            flag=flag,
        )


def run_inputs(raw: RawParams, cwd: str) -> list[tuple[str, str, str]]:
    """``(flag, name, path)`` of each file the run reads."""
    out = []
    for attr, default in INPUT_FLAGS:
        name = getattr(raw, attr, None)
        if name:
            out.append((raw.flag_of.get(attr, default), name, os.path.join(cwd, name)))
    for flag, name in getattr(raw, "header_files", {}).items():
        out.append((flag, name, os.path.join(cwd, name)))
    return out


def run_outputs(parsed: ParsedArgs, panel_names: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(flag, name)`` of each file a single-frame run writes (default names included); on a detector of
    ``panel_names``, the SMV and PGM files are one per panel (:func:`~bragg_dask.io.panels.panel_path`)."""
    from bragg_dask.io.panels import panel_path

    outs, raw = parsed.outputs, parsed.raw
    out: list[tuple[str, str]] = []
    for attr, default in OUTPUT_FLAGS:
        name = getattr(outs, attr, None)
        if name:
            flag = raw.flag_of.get(attr, f"{default} (default name)")
            names = [panel_path(name, p) for p in panel_names] if panel_names and attr != "floatfile" else [name]
            out.extend((flag, n) for n in names)
    return out


def check_outputs(
    parsed: ParsedArgs,
    *,
    zarr: str | None = None,
    write_files: bool = True,
    cwd: str | None = None,
    panel_names: tuple[str, ...] = (),
    more_inputs: tuple[tuple[str, str], ...] = (),
) -> None:
    """Refuse, before computing anything, outputs that cannot be written or would clobber another file
    (an input: the run's own, and ``more_inputs``' ``(flag, name)``)."""
    cwd = cwd or os.getcwd()
    files = run_outputs(parsed, panel_names) if write_files else []
    inputs = [(flag, name) for flag, name, _ in run_inputs(parsed.raw, cwd)] + list(more_inputs)
    check_paths(files, inputs=inputs, zarr=zarr, cwd=cwd)


#: the C program's detector flags (their rules' first spellings): a detector of panels (``--panels``)
#: places its panels itself, so each of these is refused with it
PANEL_CONFLICTS = (
    "-img", "-mask", "-Xbeam", "-Ybeam", "-Xclose", "-Yclose", "-ORGX", "-ORGY", "-pivot", "-mosflm", "-xds",
    "-adxv", "-denzo", "-dials", "-fdet_vector", "-sdet_vector", "-odet_vector", "-twotheta_axis",
    "-pix0_vector", "-distance", "-close_distance", "-twotheta", "-detector_rotx", "-detector_roty",
    "-detector_rotz", "-detsize", "-detsize_f", "-detsize_s", "-detpixels", "-detpixels_f", "-detpixels_s",
    "-curved_det", "-pixel", "-roi",
)  # fmt: skip


#: of those, what a preset (``--detector``) fixes itself: its frame's pixels; the others place its frame
PRESET_CONFLICTS = ("-img", "-mask", "-detsize", "-detsize_f", "-detsize_s", "-detpixels", "-detpixels_f",
                    "-detpixels_s", "-curved_det", "-pixel", "-roi")  # fmt: skip


def check_panel_flags(raw: RawParams, flag: str = "--panels", placed: bool = False) -> None:
    """Refuse, naming it as typed, a C detector flag given (``raw``: the parsed C arguments) that a
    detector of panels would contradict (:data:`PANEL_CONFLICTS`); beam, crystal, sources, phi, mosaic,
    the sensor (thickness, oversampling) and outputs apply as usual.  ``placed``: a preset, whose frame
    the C program's flags place (distance, beam centre, rotations...): only what fixes its pixels
    (:data:`PRESET_CONFLICTS`) is refused."""
    from bragg_dask.nanobragg.args import RULES

    refused = PRESET_CONFLICTS if placed else PANEL_CONFLICTS
    conflicting = [r for r in RULES if r.patterns[0] in refused]
    for arg, _ in raw.flags:
        if any(r.matches(arg) for r in conflicting):
            what = "its frame's pixels" if placed else "every panel's place, size and pixels"
            raise UsageError(f"sets nanoBragg's single detector; {flag} gives {what} (leave it out)", flag=arg)


def check_paths(
    outputs: Iterable[tuple[str, str]],
    *,
    inputs: Iterable[tuple[str, str]] = (),
    zarr: str | None = None,
    cwd: str | None = None,
) -> None:
    """The checks of :func:`check_outputs` on ``(flag, name)`` pairs (``bragg-dask export`` can use them too)."""
    cwd = cwd or os.getcwd()
    targets = [(flag, name, os.path.join(cwd, name)) for flag, name in outputs]
    for flag, name, path in targets:
        _check_target(flag, name, path)
    if zarr is not None:
        zpath = os.path.join(cwd, zarr)
        _check_target("--zarr", zarr, zpath, folder_ok=True)
        targets.append(("--zarr", zarr, zpath))
    for flag, name, path in targets:
        store = _store_around(path)
        if store is not None:
            raise ConfigError(
                f"{name} is inside the Zarr store {store}: a store is user data, and a file written "
                "into it would damage it; write it outside the store",
                flag=flag,
            )
    seen: dict[str, str] = {}
    for flag, name, path in targets:
        k = _key(path)
        if k in seen:
            raise ConfigError(f"{name} is also written by {seen[k]}: give each output its own path", flag=flag)
        seen[k] = flag
    for in_flag, in_name in inputs:
        k = _key(os.path.join(cwd, in_name))
        for flag, name, path in targets:
            if _key(path) == k or (flag == "--zarr" and k.startswith(_key(path) + os.sep)):
                raise ConfigError(f"{name} would overwrite the input file {in_name} given to {in_flag}", flag=flag)


def _store_around(path: str) -> str | None:
    """The Zarr store (a folder holding ``zarr.json``) that ``path`` lies inside, if any (``path`` itself
    excluded: a store given as ``--zarr`` is written as a store)."""
    folder, found = os.path.dirname(os.path.realpath(path)), None
    while True:  # up to the root: the outermost store (a group holds its arrays' folders, each with a zarr.json)
        if os.path.isfile(os.path.join(folder, "zarr.json")):
            found = folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return found
        folder = parent


# the flags that scale the intensities (or the scattering geometry) of a run, for a message about an overflow
_SCALE_FLAGS = (
    "-fluence",
    "-flux",
    "-exposure",
    "-beamsize",
    "-default_F",
    "-hkl",
    "-N",
    "-cell",
    "-mat",
    "-lambda",
    "-energy",
    "-wave",
    "-sourcefile",
    "sample",
    "xtal",
    "-fudge",
    "-water",
    "-pixel",
    "-distance",
    "-img",
    "-mask",
)


def check_image_finite(parsed: ParsedArgs, stats: ImageStats) -> None:
    """Refuse, before any file is written, an image whose intensities overflowed (infinite or NaN pixels):
    the C program would write them; no file means anything with them."""
    if math.isfinite(stats.max_I) and math.isfinite(stats.mean) and math.isfinite(stats.rms):
        return
    given = [f for f, _ in parsed.raw.flags if any(k in f for k in _SCALE_FLAGS)]
    names = "/".join(dict.fromkeys(given)) or "-default_F"
    raise ConfigError(
        f"the image has infinite or NaN pixels (max_I = {stats.max_I:g}, mean = {stats.mean:g}): "
        "the intensities overflow floating point; give smaller values",
        flag=names,
    )
