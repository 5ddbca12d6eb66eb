"""Opening input files: one clear message for a missing file, a folder, an empty or a binary file."""

from __future__ import annotations

import os

from ..errors import InputFileError


def read_bytes(path: str) -> bytes:
    """The whole file; an :class:`InputFileError` when it is missing, a folder, unreadable or empty."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputFileError(path, None, "is a folder, not a file")
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
