"""Errors that the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations


class BraggDaskError(Exception):
    """Base class for user-facing errors (bad input, impossible configuration)."""


class ConfigError(BraggDaskError, ValueError):
    """An invalid or impossible configuration value; names the field and the CLI flag."""

    def __init__(self, message: str, flag: str | None = None, field: str | None = None) -> None:
        self.flag = flag
        self.field = field
        prefix = f"{flag}: " if flag else (f"{field}: " if field else "")
        super().__init__(prefix + message)


class UsageError(ConfigError):
    """An unknown or unsupported command-line flag, or a flag missing its value."""


class InputFileError(BraggDaskError, ValueError):
    """A malformed or missing input file; names the file and, when known, the line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
