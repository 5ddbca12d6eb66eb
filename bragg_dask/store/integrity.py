"""A store's metadata checked before it is read or resumed: damaged metadata is one line naming the file,
never a traceback, and never taken for something else (a file name, an argument, a foreign folder).

Part of :mod:`bragg_dask.store`.
"""

from __future__ import annotations

import json
import os

from bragg_dask.errors import BraggDaskError, ConfigError
from bragg_dask.store.names import FLOAT

#: the arrays every bragg_dask store holds (the int and noise arrays come and go with the options)
REQUIRED_ARRAYS = (FLOAT, "tiles_done", "tile_stats", "noise_seed", "int_scale", "phi0_deg")


class DamagedChunk(BraggDaskError):
    """A chunk or shard file that is not whole: missing where the store says it was written, failing its
    checksum, not decodable, or of the wrong size.  ``file``: its path; ``why``: what is wrong."""

    def __init__(self, file: str, why: str) -> None:
        self.file, self.why = file, why
        super().__init__(f"{file}: {why}")


def damage_error(path: str, flag: str, frame: int | None, tile, file: str, why: str, more: int = 0) -> ConfigError:
    """The one line a reader gives for a damaged store: the frame, tile and file, what is wrong, the fix."""
    where = ", ".join(
        x
        for x in (
            f"frame {frame}" if frame is not None else "",
            f"tile {tuple(int(v) for v in tile)}" if tile is not None else "",
        )
        if x
    )
    others = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return ConfigError(
        f"{path} is damaged: {where + ': ' if where else ''}{file}: {why}{others}; its data is not "
        f"read: `bragg-dask verify {path} --repair` (or the same simulation run again) computes it "
        "again",
        flag=flag,
    )


def metadata_problems(path: str) -> list[tuple[str, str]]:
    """``(file, why)`` for each damaged metadata file of the store at ``path`` (empty: whole): the group's
    ``zarr.json`` (JSON, a bragg_dask group), and the ``zarr.json`` of each array it needs and of every
    array it holds.  A damaged group record is the only problem given (nothing else can be trusted)."""
    problems: list[tuple[str, str]] = []

    def node(folder: str) -> dict | None:
        file = os.path.join(folder, "zarr.json")
        try:
            with open(file, "rb") as fh:
                meta = json.loads(fh.read())
        except FileNotFoundError:
            problems.append((file, "missing"))
            return None
        except (OSError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append((file, f"not readable JSON ({why})"))
            return None
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
            problems.append((file, "not Zarr v3 metadata"))
            return None
        return meta

    group = node(path)
    if group is None:
        return problems
    if ((group.get("attributes") or {}).get("bragg_dask") or {}).get("package") != "bragg_dask":
        return [(os.path.join(path, "zarr.json"), "no bragg_dask record in its attributes")]
    held = set(((group.get("consolidated_metadata") or {}).get("metadata")) or {})
    held |= {e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e)) and not e.startswith(".")}
    for name in sorted(held | set(REQUIRED_ARRAYS)):
        meta = node(os.path.join(path, name))
        if meta is not None and meta.get("node_type") != "array":
            problems.append((os.path.join(path, name, "zarr.json"), "not an array's metadata"))
    return problems


def check_metadata(path: str, flag: str) -> None:
    """A store's metadata readable and whole (:func:`metadata_problems`), else one line naming the first
    damaged file (``flag``: the option or subcommand that named the store).  Damaged metadata is never
    read as a store, nor taken for a file or an argument."""
    problems = metadata_problems(path)
    if not problems:
        return
    file, why = problems[0]
    fix = (
        "restore it, or make it again (--overwrite replaces it)"
        if file != os.path.join(path, "zarr.json")
        else "restore it, or remove it and make it again (a store whose own record cannot be read is "
        "never replaced: nothing says it is one)"
    )
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ConfigError(f"{path} is a damaged store: {file}: {why}{more}; it cannot be read or resumed: {fix}", flag=flag)


def looks_like_store(path: str) -> bool:
    """A folder holding a ``zarr.json``: a store, whole or damaged."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "zarr.json"))
