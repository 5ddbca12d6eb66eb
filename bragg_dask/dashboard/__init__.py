"""The bragg_dask page on the Dask dashboard, and the addresses a run prints.

A run on a cluster (:mod:`bragg_dask.executors.dask`) calls :func:`attach`: it registers
:class:`~bragg_dask.dashboard.plugin.DashboardPlugin` on the scheduler (once per scheduler, embedded or
remote), asks the scheduler what its HTTP server serves, and returns the :class:`Links` to print: Dask's
status page only where bokeh serves it, the bragg_dask page (``/bragg`` beside it) only where the plugin
runs, and notes saying why one is missing.  Its :class:`Reporter` then sends the run's layout and
phases; the tile tasks send their tiles (:mod:`bragg_dask.dashboard.report`).

Nothing is registered or reported when the embedded cluster runs without a dashboard
(``--dashboard-address none``), nor on a scheduler started without one.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from bragg_dask.dashboard import image
from bragg_dask.dashboard.plugin import NAME, TOPIC, DashboardPlugin, scheduler_status

log = logging.getLogger(__name__)

__all__ = ["Links", "Reporter", "attach", "status_names", "NAME", "TOPIC"]


@dataclass
class Links:
    """The addresses a run prints (None: not served) and why one is missing."""

    dask: str | None = None
    bragg: str | None = None
    notes: list[str] = field(default_factory=list)  # warnings: a page that should serve and does not

    def lines(self) -> list[str]:
        """The lines to print: each address that serves."""
        out = []
        if self.dask:
            out.append(f"dask dashboard: {self.dask}")
        if self.bragg:
            out.append(f"bragg_dask page: {self.bragg}")
        return out


def attach(client, *, embedded_off: bool = False, flag: str | None = None) -> tuple[Links, Reporter]:
    """Register the page on ``client``'s scheduler and say what serves (``embedded_off``: the embedded
    cluster was started without a dashboard: nothing is registered, nothing printed).

    A scheduler that cannot import bragg_dask could not run the tasks either (it unpickles their
    graph): a one-line :class:`~bragg_dask.executors.cluster.ClusterError` naming ``flag``."""
    links = Links()
    if embedded_off:
        return links, Reporter(None)
    try:
        client.register_plugin(DashboardPlugin(), name=NAME)
        status = client.run_on_scheduler(scheduler_status)
    except Exception as exc:  # noqa: BLE001 - a scheduler without bragg_dask, or an old distributed
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError):
            from bragg_dask.executors.cluster import ClusterError

            raise ClusterError(
                f"the scheduler cannot load bragg_dask ({text}): install bragg-dask, the version "
                "used here, where the scheduler runs (it unpickles the tasks)",
                flag=flag,
            ) from None
        links.notes.append(
            f"bragg_dask page: not served, the scheduler could not load it ({text}); install "
            "bragg-dask where the scheduler runs"
        )
        status = {"dask": _dask_pages_over_http(client), "bragg": False}
    if status.get("dask") == "off":  # the scheduler's own choice (dask scheduler --no-dashboard)
        log.debug("the scheduler runs without a dashboard: no page")
        return links, Reporter(None)
    link = _link(client)
    if status.get("dask") == "bokeh":
        links.dask = link
    elif status.get("dask") == "missing":
        links.notes.append(
            "dask dashboard: its pages need bokeh>=3.1.0 where the scheduler runs (pip install 'bokeh>=3.1.0')"
        )
    if status.get("bragg") and link:
        links.bragg = link[: -len("status")] + "bragg" if link.endswith("/status") else link.rstrip("/") + "/bragg"
        return links, Reporter(client)
    return links, Reporter(None)


def status_names(link: str) -> list[str]:
    """The names in the data of Dask's status page at ``link`` (its bokeh document, pulled over the page's
    websocket as a browser would): the task prefixes its plots show, ours among them.  For checks of a
    running dashboard (tests, benchmarks/dashboard_check.py)."""
    from bokeh.client import pull_session

    names: set[str] = set()
    with pull_session(url=link) as session:
        for model in session.document.models:
            data = getattr(model, "data", None)
            if isinstance(data, dict):
                for column in ("name", "names"):
                    names.update(str(v) for v in data.get(column, ()))
    return sorted(names)


def _link(client) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard service
        return None


def _dask_pages_over_http(client) -> str:
    """Whether Dask's status page serves, asked over HTTP (when the plugin could not be loaded)."""
    import urllib.request

    link = _link(client)
    if not link:
        return "off"
    try:
        with urllib.request.urlopen(link, timeout=3) as resp:
            body = resp.read(4096).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - not reachable from here: say nothing of it
        return "off"
    return "missing" if "Dask needs bokeh" in body else "bokeh"


class Reporter:
    """The client's side of one run on the page: its layout, then its phases.  ``client`` None: the page
    is not served, nothing is sent and :attr:`board` is None (the tasks report nothing)."""

    def __init__(self, client) -> None:
        self.client = client
        self.board: tuple[str, int, int] | None = None  # run id, preview factor, frames: what tasks carry

    def begin(
        self,
        *,
        shape: tuple[int, int],
        tile: tuple[int, int],
        done: np.ndarray,
        todo: int,
        evals_per_tile: int,
        title: str,
        extra: dict,
    ) -> None:
        """Send the run's layout: detector ``shape``, ``tile`` shape, ``done`` (frames x tile grid, tiles
        done before this run), tiles ``todo`` and evaluations per tile; sets :attr:`board`."""
        if self.client is None:
            return
        k = image.pooling(shape)
        run = f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
        msg = {
            "kind": "run",
            "run": run,
            "title": title,
            "shape": list(shape),
            "tile": list(tile),
            "grid": list(done.shape[1:]),
            "frames": int(done.shape[0]),
            "k": k,
            "todo": int(todo),
            "evals_per_tile": int(evals_per_tile),
            "done_bits": np.packbits(done.reshape(-1)).tobytes(),
            "started": time.time(),
            **extra,
        }
        if self._send(msg):
            self.board = (run, k, int(done.shape[0]))

    def phase(self, phase: str, error: str | None = None, timeout: float | None = None) -> None:
        """The run's phase: prepass, simulating, finishing, detector, complete, failed, interrupted
        (``timeout``: give up after that many seconds, for a run that is failing)."""
        if self.board is not None:
            self._send({"kind": "phase", "run": self.board[0], "phase": phase, "error": error}, timeout)

    def _send(self, msg: dict, timeout: float | None = None) -> bool:
        try:
            if timeout is None:
                self.client.log_event(TOPIC, msg)
            else:
                self.client.sync(self.client.scheduler.log_event, topic=TOPIC, msg=msg, callback_timeout=timeout)
            return True
        except Exception:  # noqa: BLE001 - the page is a view: the run goes on without it
            log.debug("bragg_dask page: event not sent", exc_info=True)
            return False
