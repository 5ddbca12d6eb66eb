"""``bragg-dask verify STORE [--repair]``: a store checked file by file, and mended from its own record.

``verify`` checks every chunk, shard index and record (:func:`bragg_dask.store.scan`) and prints one
line per problem (the file, what is wrong, the frame and tile whose data it held), then a summary.
Exit status: 0 the store is whole, 1 problems found, 2 bad input or a repair that cannot be made.

``--repair`` runs again the command that made the store, as the store records it (its arguments
and folder; never writing its output files, nor taking its cluster options or ``--overwrite``), on the
embedded cluster:
that run resumes the store, so it computes the damaged tiles again (and writes the records again), and
the store is checked once more.  Frames the detector model had made (``bragg-dask noisify STORE`` or
the run's own ``--psf``...) go through it again with their recorded flags and seed.  A store whose
metadata is damaged, or one that does not record its command (made through the Python API, or before
the command was recorded), cannot be repaired here: the line says what to do instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

from bragg_dask.cli.flaghelp import verify_parser
from bragg_dask.errors import ConfigError, UsageError

log = logging.getLogger(__name__)

#: the recorded command's options that a repair sets itself: the store, no cluster of the record (an
#: embedded one), never --overwrite, no progress (abbreviated spellings are parsed, then replaced)
_REPAIR_OPTIONS = {
    "scheduler": None,
    "scheduler_file": None,
    "connect_timeout": None,
    "tls_ca_file": None,
    "tls_cert": None,
    "tls_key": None,
    "listen": None,
    "dashboard_address": None,
    "workers": None,
    "worker_processes": False,
    "overwrite": False,
    "quiet": True,
    "verbose": False,
}


def verify_main(argv: list[str]) -> int:
    """Check (and with ``--repair`` mend) the store; the exit status (see the module notes)."""
    from bragg_dask import store

    a = verify_parser().parse_args(argv)
    path = a.store
    if not os.path.exists(path):
        raise UsageError(f"no store at {path}", flag="verify")
    if not store.looks_like_store(path):
        raise ConfigError(f"{path} is not a bragg_dask store (no zarr.json)", flag="verify")
    found = store.scan(path)
    _print_problems(found)
    if found.metadata:
        print(
            f"{path}: damaged metadata ({len(found.problems)} file{'s' if len(found.problems) > 1 else ''}): the "
            "store cannot be read, resumed or repaired; restore the files, or make it again"
        )
        return 2 if a.repair else 1
    if found.clean:
        print(_whole(path, found))
        return 0
    n = int(found.redo.sum())
    if not a.repair:
        print(
            f"{path}: {len(found.problems)} problem{'s' if len(found.problems) > 1 else ''} in {found.files} files "
            f"checked; {n} tile{'s' if n != 1 else ''} to compute again: bragg-dask verify {path} --repair"
        )
        return 1
    repaired = repair(path, found)
    after = store.scan(path)
    _print_problems(after)
    if not after.clean:
        print(f"{path}: {len(after.problems)} problem{'s' if len(after.problems) > 1 else ''} left after the repair")
        return 1
    print(f"{path}: repaired: {repaired}; " + _whole(path, after).split(": ", 1)[1])
    return 0


def _print_problems(found) -> None:
    for p in found.problems:
        print(p.line())


def _whole(path: str, found) -> str:
    frames = [bool(f.all()) for f in found.done]  # each frame's tiles (of every panel)
    note = "" if found.checksummed else " (a store made before checksums: only files that cannot be decoded are found)"
    return f"{path}: whole: {found.files} files checked, {sum(frames)} of {len(frames)} frames complete{note}"


def recorded_command(path: str) -> dict:
    """The store's record of the command that made it, else one line saying why it cannot be repaired."""
    from bragg_dask.store import store_metadata

    meta = store_metadata(path)
    command = meta.get("command")
    if not (
        isinstance(command, dict)
        and isinstance(command.get("argv"), list)
        and all(isinstance(x, str) for x in command["argv"])
        and isinstance(command.get("cwd"), str)
    ):
        raise ConfigError(
            f"{path} does not record the command that made it (made through the Python API, or by "
            "an older bragg_dask); run the same simulation again with --zarr {path}: it computes "
            "the damaged tiles again",
            flag="--repair",
        )
    return command


def repair(path: str, found) -> str:
    """Run the store's recorded command again on it (see the module notes); what was done, in words."""
    from bragg_dask import cli, store
    from bragg_dask.detector.flags import model_from_service
    from bragg_dask.executors import execute, executor_for

    command = recorded_command(path)
    model_frames = _model_frames(path)
    service, c_args = cli.split_argv(command["argv"])
    opts = cli.service_parser().parse_args(service)
    for name, value in _REPAIR_OPTIONS.items():
        setattr(opts, name, value)
    opts.zarr, opts.command = os.path.abspath(path), command
    with _folder(command["cwd"], path):
        try:
            settings, parsed, dataset, sim, outputs = cli.prepare(opts, c_args)
        except ConfigError as exc:
            raise ConfigError(
                f"cannot repair {path}: its recorded command fails now ({exc})", flag="--repair"
            ) from None
        executor = executor_for(
            store=opts.zarr,
            cluster=cli._cluster_options(opts),
            overwrite=False,
            dataset=dataset,
            outputs=outputs,
            command=command,
            detector=model_from_service(opts, outputs),
        )
        try:
            result = execute(sim, settings, executor)
        except store.OtherConfiguration:
            raise ConfigError(
                f"cannot repair {path}: its recorded command (in {command['cwd']}) now describes another "
                "configuration (its input files changed?); nothing was written",
                flag="--repair",
            ) from None
    redone = _model_again(path, model_frames, found)
    what = f"{result.computed} tile{'s' if result.computed != 1 else ''} computed again"
    return what + (
        f", the detector model applied again to frame{'s' if len(redone) > 1 else ''} {', '.join(map(str, redone))}"
        if redone
        else ""
    )


@contextlib.contextmanager
def _folder(cwd: str, path: str):
    """In the folder the command ran in (its input files are named from there)."""
    old = os.getcwd()
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise ConfigError(
            f"cannot repair {path}: the folder its command ran in, {cwd}, is gone ({exc.strerror})", flag="--repair"
        ) from None
    try:
        yield
    finally:
        os.chdir(old)


def _model_frames(path: str) -> dict:
    from bragg_dask.store import store_metadata

    return dict(((store_metadata(path).get("response") or {}).get("frames")) or {})


def _model_again(path: str, before: dict, found) -> list[int]:
    """Frames the detector model had made whose tiles were computed again (their images are the
    simulation's now): through the model again, with its recorded flags and seed."""
    from bragg_dask import store
    from bragg_dask.detector.flags import model_from_record
    from bragg_dask.detector.store_pass import DetectorPass, noisify_frame

    now = _model_frames(path)
    again = sorted(int(k) for k in before if k not in now and found.redo[int(k)].any())
    for k in again:
        entry = before[str(k)]
        seed = entry.get("noise_seed")
        model = model_from_record(dict(entry.get("model") or {}, nonoise=seed is None))
        job = DetectorPass(path, dataclasses.replace(model, seed=None if seed is None else int(seed) - k))
        job.begin()
        noisify_frame(*job.frame_args(k))
        job.record([k])
    if again:
        store.sync_response(path)
    return again
