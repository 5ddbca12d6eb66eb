"""Structure-factor-vs-resolution tables (``-stol``, ``-4stol``, ``-Q``): read and checked, not used.

The C program reads these two-column files and never uses them; they are validated here so a
malformed file is reported instead of ignored.
"""

from __future__ import annotations

import numpy as np

from bragg_dask.io.textcols import read_columns


def read_stol(path: str) -> np.ndarray:
    """``(n, 2)``: abscissa (as written in the file) and structure factor."""
    data, _ = read_columns(path, 2, min_cols=2, what=" 'stol F'")
    return data
