"""MOSFLM orientation matrix files (``-mat``): the first three lines are the A matrix."""

from __future__ import annotations

import math

import numpy as np

from bragg_dask.errors import InputFileError
from bragg_dask.io.textfile import parse_number, read_text


def read_mat(path: str) -> np.ndarray:
    """The A matrix of a MOSFLM matrix file as ``(3, 3)``: rows x, y, z; columns a*, b*, c*.

    The values are lambda-scaled reciprocal vectors (dimensionless), as MOSFLM writes them.  The C
    program takes the first nine numbers wherever they are; here the first three non-blank lines
    must hold three numbers each (the rest of the file, if any, is not read), and the matrix must be
    finite and invertible.
    """
    text = read_text(path)
    rows: list[list[float]] = []
    last = 1
    for no, line in enumerate(text.splitlines(), start=1):
        toks = line.split()
        if not toks:
            continue
        last = no
        if len(toks) != 3:
            raise InputFileError(path, no, f"an A-matrix line needs 3 numbers, found {len(toks)}: {line.strip()!r}")
        row = []
        for tok in toks:
            try:
                v = parse_number(tok)
            except ValueError:
                raise InputFileError(path, no, f"expected a number in the A matrix, got {tok!r}") from None
            if not math.isfinite(v):
                raise InputFileError(path, no, f"A-matrix value {tok!r} is not finite")
            row.append(v)
        rows.append(row)
        if len(rows) == 3:
            break
    if len(rows) < 3:
        raise InputFileError(path, last, f"the A matrix needs 3 lines of 3 numbers, found {len(rows)} line(s)")
    a = np.asarray(rows, dtype=np.float64)
    det = float(np.linalg.det(a))
    scale = float(np.prod(np.linalg.norm(a, axis=0)))
    if scale == 0.0 or abs(det) <= 1e-9 * scale:
        raise InputFileError(path, last, "the A matrix is singular (its reciprocal axes are coplanar)")
    return a
