"""Opening input files: one clear message for a missing file, a folder, an empty or a binary file."""

from __future__ import annotations

import os
import re
import stat

from bragg_dask.errors import InputFileError


def read_bytes(path: str) -> bytes:
    """The whole file; an :class:`InputFileError` when it is missing, a folder, unreadable or empty."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputFileError(path, None, "is a folder, not a file")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # missing, a dangling link ...: open() below says which
    if mode is not None and not stat.S_ISREG(mode):  # a FIFO would block, /dev/zero never ends
        raise InputFileError(path, None, "is a device, FIFO or socket, not a regular file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise InputFileError(path, None, "file not found") from None
    except PermissionError:
        raise InputFileError(path, None, "cannot read it (permission denied)") from None
    except OSError as exc:
        raise InputFileError(path, None, f"cannot read it: {exc.strerror or exc}") from None
    if not raw.strip():
        raise InputFileError(path, None, "is empty")
    return raw


def read_text(path: str) -> str:
    """The file as text; a NUL byte or bytes that are not UTF-8 text are an error naming the line."""
    raw = read_bytes(path)
    nul = raw.find(b"\x00")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start if nul < 0 else min(nul, exc.start)
        raise InputFileError(path, raw.count(b"\n", 0, bad) + 1, "binary data, not a text file") from None
    if nul >= 0:
        raise InputFileError(path, raw.count(b"\n", 0, nul) + 1, "binary data (a NUL byte), not a text file")
    return text


# numbers as the C program's readers (fscanf, atof) take them: ASCII decimal digits, sign, point,
# exponent.  Python's float() also takes '1_0', other scripts' digits and 'nan'/'inf', which C reads
# differently (or stops at): those are refused here
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
# a text made of these characters alone holds no token that float()/int() read differently from C
PLAIN_NUMERIC = re.compile(r"[0-9eE+\-. \t\r\n\f\v]*", re.ASCII)


def parse_number(tok: str) -> float:
    """A decimal number token (may be NaN/infinite only when written as a huge exponent: callers check);
    ``ValueError`` otherwise."""
    if not DECIMAL.fullmatch(tok):
        raise ValueError(tok)
    return float(tok)


def parse_integer(tok: str) -> int:
    """A decimal integer token; ``ValueError`` otherwise ('1.0', '1e3', '1_0' are refused)."""
    if not INTEGER.fullmatch(tok):
        raise ValueError(tok)
    return int(tok)
