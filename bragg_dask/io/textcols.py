"""Column text files (source lists, stol tables), read the way the C program's ``read_text_file`` does.

Columns are separated by any of `` \\t,;:!``.  Missing trailing columns are NaN, except on a line
that does not end in a plain newline (the last line without one, or CRLF endings), where the C
parser fills them with 0.  Unlike C, a token that is not a number, a line with fewer than
``min_cols`` or more than ``ncols`` columns is an error naming the line.
"""

from __future__ import annotations

import math
import re

import numpy as np

from bragg_dask.errors import InputFileError
from bragg_dask.io.textfile import parse_number, read_text

_DELIMS = re.compile(r"[ \t,;:!]+")


def read_columns(path: str, ncols: int, *, min_cols: int = 1, what: str = "") -> tuple[np.ndarray, list[int]]:
    """``(rows, ncols)`` float64 values and the 1-based line number of each row."""
    text = read_text(path)
    rows, numbers = [], []
    for no, raw in enumerate(text.splitlines(keepends=True), start=1):
        body = raw.rstrip("\r\n")
        tokens = [t for t in _DELIMS.split(body.strip()) if t]
        if not tokens:
            continue
        if len(tokens) > ncols or len(tokens) < min_cols:
            expect = f"{ncols}" if min_cols == ncols else f"{min_cols} to {ncols}"
            raise InputFileError(path, no, f"expected {expect} columns{what}, found {len(tokens)}")
        vals = []
        for tok in tokens:
            try:
                v = parse_number(tok)
            except ValueError:
                raise InputFileError(path, no, f"expected a number, got {tok!r}") from None
            if not math.isfinite(v):
                raise InputFileError(path, no, f"expected a finite number, got {tok!r}")
            vals.append(v)
        fill = np.nan if raw.endswith("\n") and not raw.endswith("\r\n") else 0.0
        rows.append(vals + [fill] * (ncols - len(vals)))
        numbers.append(no)
    if not rows:
        raise InputFileError(path, None, "no data lines")
    return np.asarray(rows, dtype=np.float64), numbers
