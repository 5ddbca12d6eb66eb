"""MOSFLM orientation matrix files (``-mat``): the first nine numbers are the A matrix."""

from __future__ import annotations

import numpy as np

from ..errors import InputFileError


def read_mat(path: str) -> np.ndarray:
    """The first nine numbers of a MOSFLM matrix file as ``(3, 3)``: rows x, y, z; columns a*, b*, c*.

    The values are lambda-scaled reciprocal vectors (dimensionless), as MOSFLM writes them.
    """
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        raise InputFileError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, None, f"cannot read: {exc}") from None
    values: list[float] = []
    for no, line in enumerate(text.splitlines(), start=1):
        for tok in line.split():
            if len(values) == 9:
                break
            try:
                values.append(float(tok))
            except ValueError:
                raise InputFileError(path, no, f"expected a number in the A matrix, got {tok!r}") from None
        if len(values) == 9:
            break
    if len(values) < 9:
        raise InputFileError(path, None, f"needs 9 numbers (3x3 A matrix), found {len(values)}")
    a = np.asarray(values, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(a).all():
        raise InputFileError(path, None, "A matrix has non-finite values")
    return a
