"""A store's metadata checked before it is read or resumed: damaged metadata is one line naming the file,
never a traceback, and never taken for something else (a file name, an argument, a foreign folder).

Part of :mod:`bragg_dask.store`.
"""

from __future__ import annotations

import json
import os

from ..errors import ConfigError
from .names import FLOAT

#: the arrays every bragg_dask store holds (the int and noise arrays come and go with the options)
REQUIRED_ARRAYS = (FLOAT, "tiles_done", "tile_stats", "noise_seed", "int_scale", "phi0_deg")


def check_metadata(path: str, flag: str) -> None:
    """A store's metadata readable and whole, else one line naming the file (``flag``: the option or
    subcommand that named the store): the group's ``zarr.json`` (JSON, a bragg_dask group), and the
    ``zarr.json`` of each array it needs and of every array it holds.  Damaged metadata is never read
    as a store, nor taken for a file or an argument."""
    def damaged(file: str, why: str) -> ConfigError:
        fix = ("restore it, or make it again (--overwrite replaces it)" if file != os.path.join(path, "zarr.json")
               else "restore it, or remove it and make it again (a store whose own record cannot be read is "
               "never replaced: nothing says it is one)")
        return ConfigError(f"{path} is a damaged store: {file}: {why}; it cannot be read or resumed: {fix}", flag=flag)

    def node(folder: str) -> dict:
        file = os.path.join(folder, "zarr.json")
        try:
            with open(file, "rb") as fh:
                meta = json.loads(fh.read())
        except FileNotFoundError:
            raise damaged(file, "missing") from None
        except (OSError, ValueError) as exc:
            raise damaged(file, f"not readable JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                          ) from None
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
            raise damaged(file, "not Zarr v3 metadata")
        return meta

    group = node(path)
    if ((group.get("attributes") or {}).get("bragg_dask") or {}).get("package") != "bragg_dask":
        raise damaged(os.path.join(path, "zarr.json"), "no bragg_dask record in its attributes")
    held = set((((group.get("consolidated_metadata") or {}).get("metadata")) or {}))
    held |= {e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e)) and not e.startswith(".")}
    for name in sorted(held | set(REQUIRED_ARRAYS)):
        if node(os.path.join(path, name)).get("node_type") != "array":
            raise damaged(os.path.join(path, name, "zarr.json"), "not an array's metadata")


def looks_like_store(path: str) -> bool:
    """A folder holding a ``zarr.json``: a store, whole or damaged."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "zarr.json"))
