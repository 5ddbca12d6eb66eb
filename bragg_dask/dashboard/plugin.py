"""The scheduler side of the bragg_dask page: a ``SchedulerPlugin`` that keeps a :class:`Board` of the
runs reported to this scheduler and serves it on the scheduler's own HTTP server, beside Dask's pages:

* ``/bragg``: the page (HTML; it polls the two below once a second);
* ``/bragg/state.json``: the run's figures, the runs kept, our tasks' states on the scheduler;
* ``/bragg/frame.png`` and ``/bragg/thumb.png`` (``?run=ID&frame=K``): the current frame, a finished
  frame's thumbnail.

The plugin reads only what the events carry (the client's run and phase events, the tasks' tile
events, :mod:`bragg_dask.dashboard.report`) and the scheduler's task counts, so it works wherever
the scheduler runs, whether or not it can see the store.  Its events are dropped from the
scheduler's event log once applied (the log would otherwise keep every tile's preview).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed.diagnostics.plugin import SchedulerPlugin
else:
    try:
        from distributed.diagnostics.plugin import SchedulerPlugin
    except ImportError:  # pragma: no cover - distributed is a dependency
        SchedulerPlugin = object

from bragg_dask.dashboard.board import Board
from bragg_dask.dashboard.page import PAGE

log = logging.getLogger(__name__)

NAME = "bragg-dask-dashboard"
TOPIC = "bragg-dask"
#: the task prefixes of a run (``key_split`` of their keys) shown on the page
TASK_PREFIXES = ("prepass", "simulate-tile", "finish-tile", "detector-frame")


class DashboardPlugin(SchedulerPlugin):
    """Keeps the runs reported under :data:`TOPIC` and serves the page (see the module's docstring)."""

    name = NAME
    idempotent = True  # registered once per scheduler: later runs keep the page and its runs

    def __init__(self) -> None:
        self.board = Board()
        self.scheduler = None
        self.dask_pages = "off"

    # distributed's stub declares start async; register_plugin awaits start's result only when awaitable
    def start(self, scheduler) -> None:  # type: ignore[override]
        self.scheduler = scheduler
        self.dask_pages = dask_pages(scheduler)
        app = getattr(scheduler, "http_application", None)
        if app is None or self.dask_pages == "off":  # a scheduler started without a dashboard gets none
            return
        prefix = http_prefix(app)
        args = {"scheduler": scheduler}
        app.add_handlers(
            r".*",
            [
                (prefix + r"bragg/?", PageHandler, args),
                (prefix + r"bragg/state\.json", StateHandler, args),
                (prefix + r"bragg/frame\.png", FrameHandler, args),
                (prefix + r"bragg/thumb\.png", ThumbHandler, args),
            ],
        )

    def log_event(self, topic: str, msg) -> None:
        if topic != TOPIC:
            return
        try:
            self.board.event(msg)
        except Exception:  # noqa: BLE001 - a malformed report must not disturb the scheduler
            log.debug("bragg_dask page: event not applied", exc_info=True)
        broker = getattr(self.scheduler, "_broker", None)
        if broker is not None and hasattr(broker, "truncate"):
            broker.truncate(TOPIC)


def dask_pages(scheduler) -> str:
    """What the scheduler's HTTP server serves of Dask's dashboard: ``bokeh`` (the pages), ``missing``
    (only the hint that bokeh is missing) or ``off`` (started without a dashboard)."""
    app = getattr(scheduler, "http_application", None)
    if app is None:
        return "off"
    if any("bokeh" in f"{type(a).__module__}.{type(a).__name__}".lower() for a in getattr(app, "applications", ())):
        return "bokeh"
    for rules in _rules(app):
        if getattr(rules.target, "__name__", "") == "MissingBokeh":
            return "missing"
    return "off"


def _rules(app):
    for router in (app.wildcard_router, app.default_router):
        for rule in router.rules:
            yield rule
            yield from getattr(rule.target, "rules", ())


def http_prefix(app) -> str:
    """The dashboard's path prefix (``dask scheduler --dashboard-prefix``), from its /health route."""
    for rule in _rules(app):
        pattern = getattr(getattr(rule.matcher, "regex", None), "pattern", "")
        if pattern.rstrip("$").endswith("/health"):
            return pattern.rstrip("$")[: -len("health")]
    return "/"


def scheduler_status(dask_scheduler) -> dict:
    """Run on the scheduler (``client.run_on_scheduler``): what its HTTP server serves."""
    pages = dask_pages(dask_scheduler)
    app = getattr(dask_scheduler, "http_application", None)
    return {
        "dask": pages,
        "bragg": NAME in dask_scheduler.plugins and pages != "off",
        "prefix": http_prefix(app) if app is not None else "/",
    }


def task_states(scheduler) -> dict:
    """Our task prefixes' tasks now on the scheduler by state (``{"simulate-tile": {"memory": 12,
    "processing": 2}}``; forgotten tasks, those of earlier runs, left out)."""
    out = {}
    for name, prefix in list(getattr(scheduler, "task_prefixes", {}).items()):
        if name in TASK_PREFIXES or name.startswith("prepass"):
            counts = {s: int(n) for s, n in getattr(prefix, "states", {}).items() if n and s != "forgotten"}
            if counts:
                out[name] = counts
    return out


if TYPE_CHECKING:
    from tornado.web import RequestHandler as _Handler
else:
    try:
        from tornado import web as _web

        _Handler = _web.RequestHandler
    except ImportError:  # pragma: no cover - tornado comes with distributed
        _Handler = object


class _Base(_Handler):
    def initialize(self, scheduler) -> None:
        self.dask_scheduler = scheduler

    def _plugin(self) -> DashboardPlugin | None:
        plugin = self.dask_scheduler.plugins.get(NAME)
        return plugin if isinstance(plugin, DashboardPlugin) else None

    def _view(self):
        plugin = self._plugin()
        return None if plugin is None else plugin.board.get(self.get_argument("run", None))

    def _frame(self) -> int | None:
        text = self.get_argument("frame", "")
        return int(text) if text.lstrip("-").isdigit() else None


class PageHandler(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(PAGE)


class StateHandler(_Base):
    def get(self) -> None:
        plugin = self._plugin()
        view = self._view()
        runs = (
            []
            if plugin is None
            else [
                {"run": v.id, "title": v.info.get("title", v.id), "phase": v.phase}
                for v in reversed(plugin.board.runs.values())
            ]
        )
        state = {
            "run": None if view is None else view.summary(),
            "runs": runs,
            "tasks": task_states(self.dask_scheduler),
            "dask_pages": plugin.dask_pages if plugin is not None else "off",
        }
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(state, default=_jsonable))


class FrameHandler(_Base):
    async def get(self) -> None:
        view = self._view()
        if view is None:
            self.set_status(404)
            self.write("no run")
            return
        key, make = view.picture(self._frame())
        data = view.cached_png(key)
        if data is None:  # made on a thread: the scheduler's event loop (and an in-process worker's) runs on
            from tornado.ioloop import IOLoop

            data = view.keep_png(key, await IOLoop.current().run_in_executor(None, make))
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "no-store")
        self.write(data)


class ThumbHandler(_Base):
    def get(self) -> None:
        view = self._view()
        f = self._frame()
        data = None if view is None or f is None else view.thumb_png(f)
        if data is None:
            self.set_status(404)
            self.write("no such thumbnail")
            return
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "no-store")
        self.write(data)


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
