"""What the Dask executor asks of its client besides tiles: the dashboard page announced, GPU workers
checked, pre-pass functions run as tasks.

Part of :mod:`bragg_dask.executors.dask`.
"""

from __future__ import annotations

import logging

from bragg_dask import dashboard
from bragg_dask.errors import ConfigError

log = logging.getLogger(__name__)


def announce(client, embedded_off: bool, flag: str | None) -> dashboard.Reporter:
    """Put the bragg_dask page on the scheduler; log the addresses that serve (and why one does not)."""
    links, reporter = dashboard.attach(client, embedded_off=embedded_off, flag=flag)
    for line in links.lines():
        log.info("%s", line)
    for note in links.notes:
        log.warning("%s", note)
    return reporter


def check_gpu_workers(client, device: str) -> None:
    if not device.startswith("cuda"):
        return
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get("GPU") for w in workers.values()):
        raise ConfigError(
            "no worker advertises a GPU resource (start one worker per GPU with "
            "--resources GPU=1; see deploy/README.md)",
            flag="--device",
        )


def dask_mapper(client, sim_future, tag: str):
    """Run a pre-pass function over tiles as Dask tasks (named ``prepass-...`` on the dashboard)."""

    def run(func, tiles, extra):
        futs = [
            client.submit(
                func,
                sim_future,
                t,
                *e,
                key=f"prepass-{func.__name__.strip('_')}-{tag}-s{t.index[0]}-t{t.index[1]}",
                retries=3,
                pure=False,
            )
            for t, e in zip(tiles, extra)
        ]
        return client.gather(futs)

    return run
