"""HKL text files: one reflection per line, ``h k l F`` with integer indices.

The C program reads the file as a stream of 4-number records; a malformed file silently misreads.
Here a malformed line is an error naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..physics.structure_factors import StructureFactors
from .textfile import PLAIN_NUMERIC, parse_integer, parse_number, read_text

MAX_TABLE = 2**28  # structure-factor table entries (2 GiB of float64)


def read_hkl(path: str | Path, default_F: float = 0.0) -> StructureFactors:
    """Read an HKL file into a :class:`StructureFactors` table (missing entries -> ``default_F``)."""
    path = Path(path)
    text = read_text(str(path))
    hkl, F = _parse_records(text, str(path))
    if len(F) == 0:
        raise InputFileError(str(path), None, "no reflections (expected lines of 'h k l F')")
    lo = hkl.min(axis=0)
    hi = hkl.max(axis=0)
    shape = tuple(int(x) for x in (hi - lo + 1))
    if np.prod(np.asarray(shape, dtype=np.float64)) > MAX_TABLE:
        span = hi - lo
        axis = int(np.argmax(span))
        far = np.abs(hkl[:, axis]).argmax()
        raise InputFileError(str(path), _record_line(text, int(far)),
                             f"Miller indices span {shape[0]} x {shape[1]} x {shape[2]}: too large a table "
                             f"(index {int(hkl[far, axis])} is out of any sensible range)")
    table = np.full(shape, float(default_F), dtype=np.float64)
    idx = hkl - lo
    table[idx[:, 0], idx[:, 1], idx[:, 2]] = F  # duplicates: the last one wins, as in C
    return StructureFactors(
        default_F=float(default_F),
        values=table,
        hkl_min=(int(lo[0]), int(lo[1]), int(lo[2])),
        n_records=int(len(F)),
        source=str(path),
    )


def _record_line(text: str, k: int) -> int:
    """1-based line number of the ``k``-th non-blank line."""
    seen = -1
    for no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            seen += 1
            if seen == k:
                return no
    return 1


def _parse_records(text: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised parse; on any problem, a line-by-line scan finds the line to report."""
    lines = text.splitlines()
    tokens = text.split()
    if PLAIN_NUMERIC.fullmatch(text) and all(len(ln.split()) == 4 for ln in lines if ln.strip()):
        try:
            arr = np.array(tokens, dtype=object).reshape(-1, 4)
            hkl = arr[:, :3].astype(np.int64)
            F = arr[:, 3].astype(np.float64)
            if np.isfinite(F).all() and (np.abs(hkl) < 2**31).all():
                return hkl, F
        except (ValueError, OverflowError):
            pass
    _raise_first_bad_line(lines, name)
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_first_bad_line(lines: list[str], name: str) -> None:
    for no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise InputFileError(name, no, f"expected 4 columns 'h k l F', found {len(parts)}: {line.strip()!r}")
        for tok in parts[:3]:
            try:
                h = parse_integer(tok)
            except ValueError:
                raise InputFileError(name, no, f"Miller index {tok!r} is not an integer") from None
            if abs(h) >= 2**31:
                raise InputFileError(name, no, f"Miller index {tok!r} is out of range")
        try:
            f = parse_number(parts[3])
        except ValueError:
            raise InputFileError(name, no, f"structure factor {parts[3]!r} is not a number") from None
        if not np.isfinite(f):
            raise InputFileError(name, no, f"structure factor {parts[3]!r} is not finite")
    raise InputFileError(name, None, "unreadable HKL file")
