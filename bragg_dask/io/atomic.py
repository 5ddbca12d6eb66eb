"""Write files atomically: a half-written output is never left under its final name."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile


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
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix="-" + os.path.basename(path)[:64], dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
