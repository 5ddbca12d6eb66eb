"""Write files atomically: a half-written output is never left under its final name."""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import shutil
import stat

_BATCH: contextvars.ContextVar = contextvars.ContextVar("bragg_dask_output_batch", default=None)


class _Batch:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []
        self.folders: list[str] = []


@contextlib.contextmanager
def batch():
    """The outputs written inside (:func:`atomic_write`, :func:`bragg_dask.io.mx.staged`) put in place
    together when the block ends without error, else none of them: a command whose third output fails
    leaves neither its first nor its second behind (nor changes what was on disk under their names)."""
    b = _Batch()
    token = _BATCH.set(b)
    try:
        yield
        _place_all(b.moves)
    finally:
        _BATCH.reset(token)
        for tmp, _ in b.moves:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for folder in b.folders:
            shutil.rmtree(folder, ignore_errors=True)


def _place_all(moves: list[tuple[str, str]]) -> None:
    """Rename every ``(tmp, final)``; a rename that fails puts back what was under the names before (set
    aside first), removes what was placed, and ends in one line naming the file."""
    from bragg_dask.errors import BraggDaskError

    aside: list[tuple[str, str]] = []
    placed: list[str] = []
    try:
        for tmp, final in moves:
            if os.path.isfile(final):
                saved = f"{final}.{secrets.token_hex(4)}.aside"
                os.rename(final, saved)
                aside.append((final, saved))
            os.replace(tmp, final)
            placed.append(final)
    except OSError as exc:
        failed = final
        for done in placed:
            with contextlib.suppress(OSError):
                os.unlink(done)
        for back, saved in aside:
            with contextlib.suppress(OSError):
                os.replace(saved, back)
        raise BraggDaskError(f"cannot write {failed}: {exc.strerror or exc}; nothing was written") from None
    for _, saved in aside:
        with contextlib.suppress(OSError):
            os.unlink(saved)


def place(tmp: str, final: str) -> None:
    """Rename the complete file ``tmp`` onto ``final``: now, or at the end of the :func:`batch` it is in."""
    b = _BATCH.get()
    if b is None:
        os.replace(tmp, final)
    else:
        b.moves.append((tmp, final))


def defer_removal(folder: str) -> bool:
    """Inside a :func:`batch`: ``folder`` (holding files it places) removed at its end; True.  Else False."""
    b = _BATCH.get()
    if b is not None:
        b.folders.append(folder)
    return b is not None


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
        place(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
