"""bragg_dask.Model on a detector of panels (``--panels``): each panel's image equals the C program run on that
panel alone (``tests/data/panels``, as in ``test_panel_detector.py``), on both backends; each panel's distance,
beam centre and rotations are parameters of its own (gradcheck), and the loss's gradient tile by tile equals the
untiled one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call

from bragg_dask.errors import ConfigError
from bragg_dask.io.panels import read_panels, with_panels
from bragg_dask.model import Model, loss_and_grad
from bragg_dask.nanobragg.args import parse_nanobragg_args

from .conftest import DATA

PANELS = DATA / "panels"
CASES = ("modules", "tilted")
GEOMETRY = ("distance", "beam_center", "detector_rotation")


def _case(name: str):
    """The case's simulation and the C program's image of each panel ``(panel, slow, fast)``."""
    src = PANELS / name
    parsed = parse_nanobragg_args((src / "args.txt").read_text().split(), cwd=".")
    over = parsed.raw.oversample if parsed.raw.oversample > 0 else None
    sim = with_panels(parsed.simulation, read_panels(str(src / "panels.json")), over)
    doc = json.loads((src / "panels.json").read_text())
    refs = [np.fromfile(src / f"c_{p['name']}.bin", "<f4").reshape(p["n_slow"], p["n_fast"]) for p in doc["panels"]]
    return sim, np.stack(refs).astype(np.float64)


@pytest.mark.parametrize("backend", ["native", "eager"])
@pytest.mark.parametrize("name", CASES)
def test_each_panel_equals_the_c_program_on_that_panel(name, backend):
    sim, refs = _case(name)
    with torch.no_grad():
        image = Model(sim, backend=backend)().numpy()
    assert image.shape == refs.shape == sim.detector.shape
    for k in range(len(refs)):
        assert np.abs(image[k] - refs[k]).max() <= 1e-5 * np.abs(refs[k]).max(), k  # (the C images: float32)


def test_each_panels_geometry_is_a_parameter_of_its_own():
    sim, _ = _case("tilted")
    m = Model(sim, free=list(GEOMETRY))
    n = len(sim.detector.panels)
    assert tuple(m.distance.shape) == (n,) and tuple(m.beam_center.shape) == (n, 2)
    assert tuple(m.detector_rotation.shape) == (n, 3)
    for name in GEOMETRY:  # moving panel 1's geometry moves panel 1's image only
        before = m().detach()
        with torch.no_grad():
            getattr(m, name)[1] += 0.3
        after = m().detach()
        with torch.no_grad():
            getattr(m, name)[1] -= 0.3
        assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2]), name
        assert not torch.equal(after[1], before[1]), name


@pytest.mark.parametrize("backend", ["native", "eager"])
def test_gradcheck_each_panels_geometry(backend):
    sim, _ = _case("tilted")
    m = Model(sim, free=list(GEOMETRY), backend=backend)
    for name in GEOMETRY:
        p0 = getattr(m, name).detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x, name=name: functional_call(m, {name: x}, ()), (p0,), eps=1e-6,
                                        atol=1e-5, rtol=1e-3, fast_mode=True), name  # fmt: skip


@pytest.mark.parametrize("tile", [5, (3, 7)])
def test_the_tiled_gradient_on_panels_equals_the_untiled_one(tile):
    sim, _ = _case("modules")
    free = ["misset", "cell", "distance", "beam_center", "detector_rotation"]
    m = Model(sim, free=free)
    with torch.no_grad():
        observed = np.random.default_rng(0).poisson(m().numpy() + 1.0)
    whole, g_whole = loss_and_grad(m, observed, tile=10**6, offset=1.0)
    value, g = loss_and_grad(m, observed, tile=tile, offset=1.0)
    assert abs(value.item() - whole.item()) <= 1e-12 * abs(whole.item())
    for name in free:
        assert (g[name] - g_whole[name]).abs().max() <= 1e-12 * g_whole[name].abs().max(), name


def test_a_panel_along_the_beam_is_refused_in_one_line(tmp_path):
    doc = json.loads((PANELS / "tilted" / "panels.json").read_text())
    panel = doc["panels"][1]
    panel["fdet"], panel["sdet"] = [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]  # its normal (-z) across the beam (in xy)
    path = tmp_path / "panels.json"
    path.write_text(json.dumps(doc))
    parsed = parse_nanobragg_args((PANELS / "tilted" / "args.txt").read_text().split(), cwd=".")
    sim = with_panels(parsed.simulation, read_panels(str(path)), None)
    with pytest.raises(ConfigError) as err:
        Model(sim)
    assert str(err.value).startswith("--panels: panel ") and "along the beam" in str(err.value)


def test_a_psf_in_the_loss_is_refused_on_panels():
    from bragg_dask.detector.psf import PSF

    sim, refs = _case("tilted")
    with pytest.raises(ValueError, match="^psf: not with a detector of panels"):
        loss_and_grad(Model(sim, free=["distance"]), refs, psf=PSF("gauss", 1.0, 2, 20))
