"""What the compiled backends are built with, and where their builds are kept.

A :class:`Toolchain` is made at the edge (:func:`bragg_dask.settings.environment_toolchain` reads
``$CC``, ``$CXX`` and ``$XDG_CACHE_HOME``) and passed down; nothing below reads the environment.  The
default: ``cc``, ``gcc`` or ``clang`` on the ``PATH``, builds under ``~/.cache/bragg_dask``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Toolchain:
    """``cc``: the C compiler (a name on the PATH or a path; None: the first of cc, gcc, clang);
    ``cxx``: the C++ compiler Inductor uses (part of its probes' record only); ``cache_root``: the cache
    folder (None: ``~/.cache``)."""

    cc: str | None = None
    cxx: str = ""
    cache_root: str | None = None

    def compiler(self) -> str | None:
        """The C compiler's path, or None where there is none."""
        if self.cc:
            return shutil.which(self.cc)
        return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

    def cache(self, kind: str) -> Path:
        """The folder of ``kind``'s builds (``native``, ``inductor``)."""
        root = Path(self.cache_root) if self.cache_root else Path.home() / ".cache"
        return root / "bragg_dask" / kind


DEFAULT_TOOLCHAIN = Toolchain()
