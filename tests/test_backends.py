"""The orientation sum's backend, chosen by argument: ``--backend`` / ``RunSettings.backend`` down to the
tile kernel, one registry choosing and caching, a named backend that cannot run said once at WARNING."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bragg_dask import RunSettings, simulation_from_args
from bragg_dask.errors import ConfigError
from bragg_dask.executors.serial import run_serial
from bragg_dask.physics.backends import REGISTRY, BackendChoice, Registry
from bragg_dask.physics.backends.toolchain import Toolchain
from bragg_dask.physics.kernel import prepare

ARGS = ("-cell 70 80 90 85 95 100 -default_F 100 -lambda 1 -distance 100 -detpixels 24 -N 5 "
        "-mosaic_spread 0.5 -mosaic_domains 3 -nonoise -nopgm").split()  # fmt: skip


def test_the_settings_choice_reaches_the_kernel(monkeypatch):
    """Each tile asks the registry with the run's choice: ``eager`` and ``native`` give the same image."""
    seen = []
    real = REGISTRY.sum_for

    def spy(prep, evals, choice):
        seen.append(choice.name)
        return real(prep, evals, choice)

    monkeypatch.setattr(REGISTRY, "sum_for", spy)
    sim = simulation_from_args(ARGS)
    eager = run_serial(sim, tile=12, backend="eager").image
    assert seen and set(seen) == {"eager"}
    seen.clear()
    fast = run_serial(sim, tile=12, backend="native").image
    assert seen and set(seen) == {"native"}
    assert np.abs(fast - eager).max() <= 1e-6 * eager.max()


@pytest.mark.parametrize("bad", [{"backend": "fastest"}, {"compile": "sometimes"}])
def test_settings_refuse_an_unknown_backend(bad):
    with pytest.raises(ConfigError) as err:
        RunSettings(**bad)
    assert err.value.flag == f"--{next(iter(bad))}"


def test_the_environment_sets_the_default(monkeypatch):
    monkeypatch.setenv("BRAGG_DASK_BACKEND", "eager")
    monkeypatch.setenv("BRAGG_DASK_COMPILE", "off")
    s = RunSettings()
    assert (s.backend, s.compile) == ("eager", "off")
    assert s.backend_choice == BackendChoice("eager", "off", s.backend_choice.toolchain)


def test_the_toolchain_comes_from_the_environment_at_the_edge(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "my-cc")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    choice = RunSettings().backend_choice
    assert choice.toolchain == Toolchain(cc="my-cc", cxx=choice.toolchain.cxx, cache_root=str(tmp_path))
    assert choice.toolchain.cache("native") == tmp_path / "bragg_dask" / "native"
    given = Toolchain(cc="other")
    assert RunSettings(toolchain=given).backend_choice.toolchain is given  # given, not read


@pytest.mark.parametrize("name", ["native", "triton", "inductor"])
def test_a_named_backend_that_cannot_run_says_so_once(name, caplog):
    """A configuration the named backend does not cover (c parity): the eager reference, and one WARNING
    per process naming the backend and the path used instead."""
    registry = Registry()
    prep = prepare(simulation_from_args(ARGS), "cpu", torch.float64, "c")
    with caplog.at_level(logging.WARNING, logger="bragg_dask.physics.backends"):
        for _ in range(3):
            assert registry.sum_for(prep, 10**9, BackendChoice(name, "on")) is None
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and f"the {name} backend" in said[0] and "eager kernel instead" in said[0], said


def test_triton_without_a_gpu_falls_back_to_inductor_and_says_so(caplog, monkeypatch):
    registry = Registry()
    prep = prepare(simulation_from_args(ARGS), "cpu", torch.float64, "spec")
    made = []
    monkeypatch.setattr(registry, "_fused", lambda prep, spec, kind, choice: made.append(kind) or None)
    with caplog.at_level(logging.WARNING, logger="bragg_dask.physics.backends"):
        registry.sum_for(prep, 10, BackendChoice("triton"))
        registry.sum_for(prep, 10, BackendChoice("triton"))
    assert made == ["inductor", "inductor"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "no CUDA device" in said[0] and "Inductor" in said[0]


def test_the_cli_takes_the_backend(cli_error, tmp_path, monkeypatch):
    """``--backend eager`` runs; an unknown one is a one-line error naming the flag, or the variable."""
    from bragg_dask.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*ARGS, "-floatfile", "e.bin", "--backend", "eager", "--quiet"]) == 0
    assert main([*ARGS, "-floatfile", "a.bin", "--quiet"]) == 0
    e, a = (np.fromfile(tmp_path / f, "<f4") for f in ("e.bin", "a.bin"))
    assert np.abs(e - a).max() <= 1e-6 * a.max()
    cli_error([*ARGS, "--backend", "fastest"], "--backend")
    monkeypatch.setenv("BRAGG_DASK_BACKEND", "fastest")
    cli_error(ARGS, "$BRAGG_DASK_BACKEND", "unknown backend 'fastest'")
