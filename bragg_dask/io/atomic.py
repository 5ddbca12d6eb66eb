"""Write files atomically: a half-written output is never left under its final name."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat


def temp_file(folder: str, prefix: str, suffix: str = "") -> tuple[int, str]:
    """``(fd, path)`` of a new file in ``folder``, opened for writing and created as ``open()`` creates a
    file (mode 0666 less the umask, as the C program's outputs), not ``mkstemp``'s 0600: outputs renamed
    into place are then readable by whom the user's umask lets read them."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


@contextlib.contextmanager
def atomic_write(path: str):
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = os.path.realpath(path)  # an output given as a symbolic link is written through it
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        # /dev/null (the only special file the checks let through): written into, never renamed over
        with open(path, "wb") as fh:
            yield fh
        return
    d = os.path.dirname(path)
    # the temporary name carries at most 64 characters of the final one: a name near the file system's
    # limit must still leave room for the prefix
    fd, tmp = temp_file(d, ".partial-", "-" + os.path.basename(path)[:64])
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
