"""The Dask cluster behind ``--zarr``: connecting, starting, stopping, and what goes wrong with it.

* :func:`connect` gives a ``distributed.Client``: to an existing scheduler (``--scheduler`` /
  ``--scheduler-file``, plain ``tcp://`` or encrypted ``tls://``), or to an embedded
  ``LocalCluster`` that listens on 127.0.0.1 only unless the user asks for more (``--listen``,
  ``--dashboard-address``).  A bad or unreachable address is a one-line :class:`ClusterError`
  within ``connect_timeout`` seconds.
* :func:`shutdown` closes client and cluster with time limits; after Ctrl-C or a lost scheduler it
  first silences the ``distributed``/``tornado``/``asyncio`` loggers and Python's warnings, so the
  user sees the CLI's one line and nothing of the cluster's teardown.
* :func:`cluster_failure` turns "the scheduler went away" (cancelled futures, closed comms) and
  "a tile keeps killing its workers" into a one-line :class:`ClusterError`.

The embedded cluster runs its workers in this process by default (``processes=False``): threads that
share the client's imported torch, so a run pays no second torch import per worker (about 1.5 s
each), and nothing is re-imported, so a plain script without an ``if __name__ == "__main__":``
guard, standard input and a notebook all work.  On CPU it is one worker with a thread per core
(``--workers N``: N threads), each tile task using ``cores // threads`` torch threads; on CUDA one
single-threaded worker per GPU.  Scheduler, worker and dashboard still listen on TCP (``--listen``,
TLS and the dashboard mean what they did).  ``worker_processes`` (``--worker-processes``) asks for
one worker process per core (CUDA: per GPU) instead, for isolation: a worker that crashes or leaks
takes only itself down.

Worker processes are spawned, and each re-runs the main script first, as ``multiprocessing`` does:
a script that would start the cluster again there (no main guard), or a main script that cannot be
re-read (standard input), is refused with a one-line :class:`ClusterError` before anything starts.
They ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and the workers' own
KeyboardInterrupt tracebacks would bury the CLI's message.  The CLI process alone handles Ctrl-C
and stops the workers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Any, cast

from bragg_dask.errors import BraggDaskError, ConfigError
from bragg_dask.settings import LOCALHOST, ClusterOptions  # noqa: F401 - part of this module's face

if TYPE_CHECKING:
    from types import FrameType

NOISY_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")


class ClusterError(BraggDaskError):
    """The cluster cannot be reached, or was lost while running; names the CLI flag that chose it."""

    def __init__(self, message: str, flag: str | None = None) -> None:
        self.flag = flag
        super().__init__(f"{flag}: {message}" if flag else message)


def security(opts: ClusterOptions):
    """A ``distributed.Security``: from the ``--tls-*`` files if given, else from Dask's configuration
    (``distributed.comm.tls.*`` keys, ``DASK_DISTRIBUTED__COMM__TLS__*`` variables)."""
    from distributed.security import Security

    if not opts.tls:
        return Security()
    for flag, path in (("--tls-ca-file", opts.tls_ca_file), ("--tls-cert", opts.tls_cert), ("--tls-key", opts.tls_key)):
        if path and not os.path.isfile(path):
            raise ConfigError(f"no such file {path}", flag=flag)
    if not (opts.tls_ca_file and opts.tls_cert):
        raise ConfigError(
            "TLS needs the CA certificate (--tls-ca-file) and this side's certificate (--tls-cert, "
            "with --tls-key unless the key is in the same file)",
            flag="--tls-cert" if opts.tls_ca_file else "--tls-ca-file",
        )
    roles = ("client",) if opts.remote else ("client", "scheduler", "worker")
    files = {}
    for role in roles:
        files[f"tls_{role}_cert"] = opts.tls_cert
        if opts.tls_key:
            files[f"tls_{role}_key"] = opts.tls_key
    return Security(require_encryption=True, tls_ca_file=opts.tls_ca_file, **files)


def _address(opts: ClusterOptions) -> str:
    if opts.scheduler:
        return opts.scheduler
    assert opts.scheduler_file is not None  # called only for a remote cluster: a scheduler or its file
    try:
        with open(opts.scheduler_file) as fh:
            return str(json.load(fh)["address"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(
            f"{opts.scheduler_file} is not a scheduler file ({_first_line(exc)})", flag=opts.flag
        ) from None


def connect(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    n_workers: int | None = None,
    device: str = "cpu",
    options: ClusterOptions | None = None,
):
    """``(client, cluster)``: a client of an existing scheduler (``cluster`` None), or of a new local
    cluster sized to the machine (in this process unless ``worker_processes``: CPU, a thread per core;
    CUDA, one worker per GPU)."""
    opts = options or ClusterOptions()
    opts = dataclasses.replace(
        opts,
        scheduler=scheduler or opts.scheduler,
        scheduler_file=scheduler_file or opts.scheduler_file,
        n_workers=n_workers or opts.n_workers,
        device=opts.device if options is not None and device == "cpu" else device,
    )
    import distributed  # noqa: F401 - its import sets its loggers' levels: lower them after that

    chatter = logging.getLogger("distributed")
    if opts.verbose:  # -v: the cluster's INFO lines, on stderr (the run's own report stays on stdout)
        chatter.setLevel(logging.INFO)
        if not any(getattr(h, "bragg_dask", False) for h in chatter.handlers):
            handler = logging.StreamHandler(sys.stderr)
            vars(handler)["bragg_dask"] = True  # our mark: the handler is added once
            chatter.addHandler(handler)
        chatter.propagate = False  # not also through the root logger (the CLI's report on stdout)
    elif chatter.getEffectiveLevel() < logging.WARNING:  # no INFO lines of the cluster's start and stop
        chatter.setLevel(logging.WARNING)
    if opts.remote:
        return _connect_remote(opts), None
    return _start_local(opts)


def _connect_remote(opts: ClusterOptions):
    from distributed import Client

    flag = opts.flag
    if opts.scheduler_file and not os.path.exists(opts.scheduler_file):
        raise ClusterError(f"no scheduler file {opts.scheduler_file}", flag=flag)
    address = _address(opts)
    sec = security(opts)
    if address.startswith("tls://") and not (sec.tls_ca_file and sec.tls_client_cert):
        raise ClusterError(
            f"{address} is encrypted: give --tls-ca-file, --tls-cert and --tls-key (or Dask's "
            "distributed.comm.tls.* settings)",
            flag=flag,
        )
    if opts.tls and not address.startswith("tls://"):
        raise ClusterError(f"--tls-* given but {address} is not a tls:// address", flag=flag)
    try:
        if opts.scheduler_file:
            return Client(
                scheduler_file=opts.scheduler_file,
                timeout=f"{opts.connect_timeout}s",
                security=sec,
                set_as_default=False,  # (our tasks are submitted to it; dask's global settings stay the user's)
            )
        return Client(address, timeout=f"{opts.connect_timeout}s", security=sec, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - no user code runs here: whatever failed is the connection
        raise ClusterError(f"cannot reach scheduler {address}: {_first_line(exc)}", flag=flag) from None


def _dashboard(opts: ClusterOptions) -> tuple[str, bool]:
    """Where the embedded scheduler's HTTP server listens, and whether it serves the dashboard there
    (without it the server stays, for /health and /metrics, on the ``--listen`` host)."""
    addr = opts.dashboard_address
    off = opts.dashboard_off
    if addr is None or off:
        host = opts.listen
        return (f"[{host}]:0" if ":" in host else f"{host}:0"), not off
    return addr, True


def _start_local(opts: ClusterOptions):
    import torch
    from distributed import Client, LocalCluster

    http, dashboard = _dashboard(opts)
    processes = opts.worker_processes
    if processes:
        check_worker_processes(opts)
    # TCP even in-process (not inproc://): --listen, TLS and outside clients keep working
    kwargs: dict[str, Any] = {
        "processes": processes,
        "protocol": "tls://" if opts.tls else "tcp://",
        "host": opts.listen,
        "dashboard_address": http,
        "scheduler_kwargs": {"dashboard": dashboard},
        "silence_logs": logging.INFO if opts.verbose else logging.ERROR,
        "threads_per_worker": 1,
    }
    if opts.device.startswith("cuda"):
        kwargs.update(n_workers=opts.n_workers or max(1, torch.cuda.device_count()), resources={"GPU": 1})
    elif processes:
        kwargs["n_workers"] = opts.n_workers or (os.cpu_count() or 1)
    else:  # one worker, a thread per core: one copy of the scattered simulation, tiles in parallel
        kwargs.update(n_workers=1, threads_per_worker=opts.n_workers or (os.cpu_count() or 1))
    if opts.tls:
        kwargs["security"] = security(opts)
    cluster = client = None
    try:
        with _sigint_ignored() if processes else contextlib.nullcontext():
            cluster = LocalCluster(**kwargs)  # worker processes start with SIGINT ignored, and keep it so
        client = Client(cluster, security=kwargs.get("security"), set_as_default=False)
        if processes:
            client.register_plugin(IgnoreInterrupt())  # workers a nanny restarts later
        return client, cluster
    except BaseException as exc:
        shutdown(client, cluster, quiet=True)
        if isinstance(exc, Exception) and not isinstance(exc, BraggDaskError):
            raise ClusterError(
                f"cannot start the local cluster on {opts.listen}: {_first_line(exc)}",
                flag="--listen" if opts.listen != LOCALHOST else None,
            ) from None
        raise


def check_worker_processes(opts: ClusterOptions) -> None:
    """Refuse, in one line, embedded worker processes that would fail to start.

    Dask spawns them, and each first re-runs the main script (``multiprocessing``'s rule: not a
    notebook, ``python -c`` or a package's ``__main__``).  Called from the script's top level outside
    an ``if __name__ == "__main__":`` block, the re-run would start a cluster again in every worker,
    which ends in a long traceback ("Nanny failed to start"); a script read from standard input
    cannot be re-run at all."""
    if not opts.worker_processes or opts.remote:
        return
    import dask

    if dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return  # forked workers re-run nothing
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if path is None or (name is not None and (name == "__main__" or name.endswith(".__main__"))):
        return
    if name is None and os.path.splitext(os.path.basename(path))[0] == "ipython":
        return
    flag = "--worker-processes"
    if not os.path.isfile(path):
        raise ClusterError(
            f"worker processes start by re-running the main script, and {path} is not a file "
            "(standard input?): run a script file, or leave worker processes off",
            flag=flag,
        )
    frame: FrameType | None = sys._getframe()
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is not None and not _under_main_guard(path, frame.f_lineno):
        raise ClusterError(
            f"worker processes start by re-running {path}, which would start them again from its "
            f"line {frame.f_lineno}: put that code under 'if __name__ == \"__main__\":', or leave "
            "worker processes off",
            flag=flag,
        )


def _under_main_guard(path: str, line: int) -> bool:
    """Whether ``line`` of the script ``path`` is inside a top-level ``if __name__ == "__main__":``
    (True when the script cannot be read back: then the start itself will tell)."""
    import ast
    import tokenize

    try:
        with tokenize.open(path) as fh:
            tree = ast.parse(fh.read(), path)
    except (OSError, SyntaxError, ValueError):
        return True

    def is_main_test(t) -> bool:
        if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)):
            return False
        sides = [t.left, t.comparators[0]]
        names = [isinstance(n, ast.Name) and n.id == "__name__" for n in sides]
        mains = [isinstance(n, ast.Constant) and n.value == "__main__" for n in sides]
        return names in ([True, False], [False, True]) and mains == [not n for n in names]

    return any(
        isinstance(node, ast.If)
        and is_main_test(node.test)
        and any(b.lineno <= line <= cast(int, b.end_lineno) for b in node.body)  # parsed: never None
        for node in tree.body
    )


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


if TYPE_CHECKING:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
else:
    try:
        from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
    except ImportError:  # pragma: no cover - distributed is a dependency
        _WorkerPlugin = object


class IgnoreInterrupt(_WorkerPlugin):
    """Worker plugin: the worker process ignores SIGINT (its client handles Ctrl-C and stops it)."""

    name = "bragg-dask-ignore-sigint"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def silence() -> None:
    """No more output from the cluster's libraries in this process: loggers, warnings, stray exceptions."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in NOISY_LOGGERS:
            logging.getLogger(name).disabled = True
    warnings.simplefilter("ignore")
    sys.unraisablehook = lambda *_: None
    threading.excepthook = lambda *_: None


@contextlib.contextmanager
def silenced():
    """:func:`silence` for a while (a library user's logging and warnings come back afterwards)."""
    loggers = [logging.getLogger(n) for n in NOISY_LOGGERS]
    loggers += [
        lg
        for n, lg in list(logging.root.manager.loggerDict.items())
        if n.split(".")[0] in NOISY_LOGGERS and isinstance(lg, logging.Logger)
    ]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    hooks = sys.unraisablehook, threading.excepthook
    with warnings.catch_warnings():
        silence()
        try:
            yield
        finally:
            for lg, level, disabled in saved:
                lg.setLevel(level)
                lg.disabled = disabled
            sys.unraisablehook, threading.excepthook = hooks


def shutdown(client, cluster, *, quiet: bool = False, timeout: float = 5.0) -> None:
    """Close ``client`` then ``cluster`` (either may be None), each within about ``timeout`` seconds.

    ``quiet`` (after Ctrl-C or a lost scheduler): silence the libraries meanwhile, cancel what the
    client still has on the cluster, stop local workers at once, and let nothing (not even a second
    Ctrl-C) interrupt the teardown."""
    with silenced() if quiet else contextlib.nullcontext():
        _shutdown(client, cluster, quiet, timeout)


def _shutdown(client, cluster, quiet: bool, timeout: float) -> None:
    try:
        if client is not None:
            if quiet:
                _cancel_all(client, timeout)
            with contextlib.suppress(Exception):
                client.close(timeout=timeout)
        if cluster is not None:
            if quiet:
                _stop_workers(cluster)
            with contextlib.suppress(Exception):
                cluster.close(timeout=timeout)
    except KeyboardInterrupt:
        if not quiet:
            raise


def _stop_workers(cluster) -> None:
    """End the local worker processes now: their tasks are abandoned anyway, and a tile half computed
    is not done in the store (a store run redoes it), so no waiting for it to finish."""
    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(nanny, "pid", None)
        if isinstance(pid, int) and pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)


def _cancel_all(client, timeout: float) -> None:
    """Cancel every future of ``client`` still on a reachable scheduler (tiles not started never start)."""
    from distributed import Future

    if getattr(client, "status", None) != "running" or not client.futures:
        return
    with contextlib.suppress(Exception):
        futures: list[Future[Any]] = [Future(key, client) for key in list(client.futures)]
        client.sync(client._cancel, futures, force=True, callback_timeout=timeout)


def cluster_failure(
    exc: BaseException, client, opts: ClusterOptions | None = None, store: str | None = None
) -> ClusterError | None:
    """The one-line error for ``exc`` if it is the cluster failing (not a task's own error), else None."""
    from distributed.comm.core import CommClosedError

    if TYPE_CHECKING:
        from distributed.scheduler import KilledWorker
    else:
        try:
            from distributed.scheduler import KilledWorker
        except ImportError:  # pragma: no cover
            KilledWorker = ()  # noqa: N806
    flag = opts.flag if opts is not None else None
    if isinstance(exc, KilledWorker):
        allowed = exc.args[2] if len(exc.args) > 2 else "several"
        return ClusterError(
            f"tile task {exc.args[0]} took down its worker more than {allowed} times (out of memory? "
            "a crash?)" + _resume_hint(store),
            flag=flag,
        )
    reasons = [str(getattr(exc, "reason", ""))] + [str(g.reason) for g in getattr(exc, "error_groups", [])]
    lost = any("connection-lost" in r for r in reasons)
    lost = lost or isinstance(exc, CommClosedError)
    cancelled = isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError))
    if not lost and (cancelled or isinstance(exc, (OSError, TimeoutError))):
        lost = getattr(client, "status", "running") != "running"  # "connecting": trying to reconnect
    if not lost:
        return None
    where = ""
    if opts is not None and opts.remote:
        with contextlib.suppress(Exception):
            where = " " + _address(opts)
    return ClusterError(f"lost the connection to the scheduler{where} mid-run" + _resume_hint(store), flag=flag)


def _resume_hint(store: str | None) -> str:
    if not store:
        return ""
    return f"; tiles written so far stay in {store}: run the same command again to compute the rest"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
