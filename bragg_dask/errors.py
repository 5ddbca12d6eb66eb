"""Errors that the CLI turns into a one-line message and exit status 2."""

from __future__ import annotations

import contextlib


class BraggDaskError(Exception):
    """Base class for user-facing errors (bad input, impossible configuration)."""


class ConfigError(BraggDaskError, ValueError):
    """An invalid or impossible configuration value; names the field and the CLI flag."""

    def __init__(
        self, message: str, flag: str | None = None, field: str | None = None, *, field_in_message: bool = True
    ) -> None:
        """``field_in_message=False``: the message names the flag alone (the field is kept for callers)."""
        self.flag = flag
        self.field = field
        self.message = message
        if flag and field and field_in_message:
            prefix = f"{flag} ({field}): "
        else:
            prefix = f"{flag}: " if flag else (f"{field}: " if field else "")
        super().__init__(prefix + message)


class UsageError(ConfigError):
    """An unknown or unsupported command-line flag, or a flag missing its value."""


class InputFileError(BraggDaskError, ValueError):
    """A malformed or missing input file; names the file, the line when known, and the flag that gave it."""

    def __init__(self, path: str, line: int | None, message: str, flag: str | None = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        self.flag = flag
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{flag}: {where}: {message}" if flag else f"{where}: {message}")

    def with_flag(self, flag: str) -> InputFileError:
        return InputFileError(self.path, self.line, self.message, flag=self.flag or flag)


@contextlib.contextmanager
def reading(flag: str):
    """Name ``flag`` in any :class:`InputFileError` raised while reading the file it gave."""
    try:
        yield
    except InputFileError as exc:
        raise exc.with_flag(flag) from None


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (a file name may hold them), so
    an error message stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
