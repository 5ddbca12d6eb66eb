"""How the C program's flags' values are read and checked: numbers as C writes them (no NaN, infinity,
``1_0`` or other scripts' digits), integers, and each flag's range (:class:`Limit`), named in one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from bragg_dask.errors import UsageError
from bragg_dask.io.textfile import DECIMAL, INTEGER
from bragg_dask.physics.constants import C_INT_MAX

# a number as the C program writes and reads one (io.textfile's grammar), here with the spaces a
# quoted argument may carry around it
_DECIMAL = re.compile(rf"\s*(?:{DECIMAL.pattern})\s*", re.ASCII)


_INTEGER = re.compile(rf"\s*(?:{INTEGER.pattern})\s*", re.ASCII)


_NONFINITE = re.compile(r"\s*[+-]?(nan|inf|infinity)\s*", re.ASCII | re.IGNORECASE)


def _num(flag: str, tok: str) -> float:
    """A finite decimal number (NaN and infinities are refused: no flag means anything by them)."""
    if _NONFINITE.fullmatch(tok):
        raise UsageError(f"expected a finite number, got {tok!r}", flag=flag)
    if not _DECIMAL.fullmatch(tok):
        raise UsageError(f"expected a number, got {tok!r}", flag=flag)
    v = float(tok)
    if not math.isfinite(v):
        raise UsageError(f"expected a finite number, got {tok!r} (out of range)", flag=flag)
    return v


def _int(flag: str, tok: str) -> int:
    """An integer (``3``, ``3.0`` or ``3e0``; not ``2.5``, NaN or infinity)."""
    if _INTEGER.fullmatch(tok):
        return int(tok)
    if not _DECIMAL.fullmatch(tok):
        raise UsageError(f"expected an integer, got {tok!r}", flag=flag)
    v = float(tok)
    if not math.isfinite(v) or v != int(v):
        raise UsageError(f"expected an integer, got {tok!r}", flag=flag)
    return int(v)


@dataclass(frozen=True)
class Limit:
    """The range a flag's value must lie in; ``None`` leaves that side open."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: strictly greater than lo
    hi_open: bool = False
    what: str = ""  # why, for the message

    def _low(self, v: float) -> bool:
        return self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo)

    def _high(self, v: float) -> bool:
        return self.hi is not None and not (v < self.hi if self.hi_open else v <= self.hi)

    def ok(self, v: float) -> bool:
        return not (self._low(v) or self._high(v))

    def __call__(self, flag: str, tok: str, v: float) -> None:
        lo, hi = self.lo, self.hi
        if self._low(v) and lo is not None:
            bound = f"> {_fmt(lo)}" if self.lo_open else f">= {_fmt(lo)}"
        elif self._high(v) and hi is not None:
            bound = f"< {_fmt(hi)}" if self.hi_open else f"<= {_fmt(hi)}"
        else:
            return
        why = f" ({self.what})" if self.what else ""
        raise UsageError(f"must be {bound}{why}, got {tok}", flag=flag)


def _fmt(x: float) -> str:
    """A bound as a message shows it: an integer without its '.0'."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


POSITIVE = Limit(0.0, lo_open=True)


NON_NEGATIVE = Limit(0.0)


COUNT = Limit(1, C_INT_MAX)


SEED = Limit(-(2**63) + 1, 2**63 - 1)


def _checked(conv: Callable, check: Limit | None) -> Callable:
    """``conv`` (a token -> value converter) followed by the range check, if any."""

    def c(flag: str, tok: str):
        v = conv(flag, tok)
        if check is not None:
            check(flag, tok, v)
        return v

    return c


MM = Limit(0.0, lo_open=True, what="a length in mm")


# beyond these a wavelength's reciprocal (and the scattering vectors) leave floating point
# degrees; the domain draws multiply it by random deviates, and any spread beyond a few turns is isotropic
MOSAIC = Limit(0.0, 1e30, what="degrees (the C program holds it in a float)")


WAVELENGTH = Limit(1e-250, 1e250, lo_open=True, hi_open=True, what="Angstrom")


def _take_until_flag(vals: list[str]) -> list[str]:
    """The values before the first one that starts with '-'."""
    out = []
    for v in vals:
        if v.startswith("-"):
            break
        out.append(v)
    return out
