"""bragg_dask.Model: the differentiable forward equals the eager kernel, its gradients equal finite
differences (gradcheck) for every parameter and lattice shape, the loss's gradient tile by tile equals the
untiled one (in-process and on a cluster), what it does not compute is refused, and a fit recovers a
perturbed start."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.func import functional_call

from bragg_dask import simulation_from_args
from bragg_dask.errors import ConfigError
from bragg_dask.model import PARAMETERS, Model, fit, least_squares, loss_and_grad, poisson_nll
from bragg_dask.physics import kernel
from bragg_dask.physics.evaluation import TileWalk
from bragg_dask.physics.roi import rendered_mask
from bragg_dask.planning.plan import TileSpec

BASE = "-cell 70 80 90 88 92 95 -N 4 -lambda 1.2 -distance 60 -pixel 0.4 -nonoise -nopgm"


@pytest.fixture(scope="module")
def hkl(tmp_path_factory) -> str:
    """A table of |F| over -8..8 on each axis (every reflection the small detectors see)."""
    path = tmp_path_factory.mktemp("model") / "small.hkl"
    rng = np.random.default_rng(7)
    rows = [f"{h} {k} {l} {rng.uniform(10, 100):.2f}" for h, k, l in itertools.product(range(-8, 9), repeat=3)]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _sim(flags: str, hkl: str | None = None):
    table = f"-hkl {hkl}" if hkl else "-default_F 100"
    return simulation_from_args(f"{BASE} {table} {flags}".split(), cwd=".")


def _eager(sim) -> np.ndarray:
    """The eager kernel's float64 values (before the image's float32), pixels not rendered 0."""
    det = sim.detector
    tile = TileSpec(0, det.spixels, 0, det.fpixels)
    prep = kernel.prepare(sim, "cpu", torch.float64, "spec")
    walk = TileWalk(tile, rendered_mask(det, tile), "cpu")
    out = np.zeros(tile.shape)
    with torch.no_grad():
        for batch in walk.batches(1 << 30):
            out[walk.ss, walk.ff] = kernel.pixel_values(prep, batch, None).numpy()
    return out


FORWARD = [
    "-detpixels 20",
    "-detpixels 16 -misset 10 20 30 -mosaic_spread 0.5 -mosaic_domains 3 -oversample 2",
    "-detpixels 16 -round_xtal -water 100 -phi 0 -osc 1 -phisteps 3",
    "-detpixels 16 -gauss_xtal -divergence 0.3 -divsteps 2 -dispersion 2 -dispsteps 2 -polar 0.8",
    "-detpixels 16 -tophat_spots -xds -detector_rotx 3 -twotheta 5",
    "-detpixels 16 -dials -detector_rotz 3 -ORGX 10 -ORGY 12 -detector_thick 0.3 -detector_thicksteps 2",
    "-detpixels 16 -adxv -roi 3 12 2 14 -point_pixel",
    "-detpixels_f 18 -detpixels_s 13 -mosflm -pivot sample -twotheta 10 -Xbeam 5 -detector_roty 2",
    "-detpixels 16 -denzo -detector_rotx 3 -detector_roty 4 -Xbeam 3 -Ybeam 4 -nopolar",
]


@pytest.mark.parametrize("backend", ["native", "eager"])
@pytest.mark.parametrize("flags", FORWARD)
def test_the_forward_equals_the_eager_kernel(flags, backend, hkl):
    sim = _sim(flags, hkl)
    ref = _eager(sim)
    with torch.no_grad():
        got = Model(sim, backend=backend).forward().numpy()
    assert ref.max() > 0
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()


def test_the_parameters_are_the_models_under_their_names(hkl):
    sim = _sim("-detpixels 8 -mosaic_spread 0.5 -mosaic_domains 2 -water 10", hkl)
    m = Model(sim, free=["misset", "distance", "structure_factors"])
    assert set(Model.PARAMETERS) == set(PARAMETERS) and "misset" in Model.PARAMETERS
    named = dict(m.named_parameters())
    assert set(named) == {"misset", "distance", "structure_factors"}
    assert all(isinstance(getattr(m, n), torch.nn.Parameter) for n in named)
    assert not isinstance(m.cell, torch.nn.Parameter)  # fixed: a buffer
    assert m.distance.item() == pytest.approx(60.0, abs=1e-9) and m.scale.item() == 1.0
    np.testing.assert_allclose(m.cell.numpy(), [70, 80, 90, 88, 92, 95], atol=0.2)  # (C's oblique cell, as built)
    assert tuple(m.structure_factors.shape) == (17, 17, 17)


SHAPES = ["-square_xtal", "-round_xtal", "-gauss_xtal", "-tophat_spots"]
GRAD = "-detpixels 5 -misset 10 20 30 -mosaic_spread 0.5 -mosaic_domains 2 -oversample 2 -divergence 0.2 -divsteps 2"


def _gradcheck(sim, name: str, backend: str = "native", **tol) -> bool:
    m = Model(sim, free=[name], backend=backend)
    p0 = getattr(m, name).detach().clone().requires_grad_(True)
    return torch.autograd.gradcheck(lambda x: functional_call(m, {name: x}, ()), (p0,), eps=1e-6, **tol)


@pytest.mark.parametrize("backend", ["native", "eager"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradcheck_every_parameter(shape, backend, hkl):
    """Mosaic domains, two sources, oversampling: analytic gradients equal central differences, on the C
    library's backward and on torch's autograd."""
    sim = _sim(f"{GRAD} {shape}", hkl)
    for name in PARAMETERS:
        if name in ("background", "structure_factors"):
            continue
        assert _gradcheck(sim, name, backend, atol=1e-5, rtol=1e-3), name


@pytest.mark.parametrize("backend", ["native", "eager"])
def test_gradcheck_background_and_structure_factors(backend, hkl):
    assert _gradcheck(_sim(f"{GRAD} -water 50", hkl), "background", backend, atol=1e-5, rtol=1e-3)
    # the table: a random projection of the Jacobian (every one of its 4913 entries at once)
    assert _gradcheck(_sim(GRAD, hkl), "structure_factors", backend, atol=1e-5, rtol=1e-3, fast_mode=True)


def _image_and_grads(sim, backend: str, dtype=torch.float64) -> tuple[np.ndarray, dict]:
    """The image and the gradients of a weighted sum of it (fixed random weights) by every parameter."""
    free = [n for n in PARAMETERS if (n != "background" or sim.water_size_m > 0)
            and (n != "mosaic_spread" or sim.crystal.mosaic_spread_rad > 0)]  # fmt: skip
    m = Model(sim, free=free, backend=backend, dtype=dtype)
    image = m()
    weights = torch.as_tensor(np.random.default_rng(3).uniform(0.5, 1.5, image.shape), dtype=dtype)
    (image * weights).sum().backward()
    grads = {n: getattr(m, n).grad for n in free}
    return image.detach().numpy(), {n: np.zeros(1) if g is None else g.numpy() for n, g in grads.items()}


@pytest.mark.parametrize("flags", [*FORWARD[:5], *(f"{FORWARD[1]} {shape}" for shape in SHAPES[1:])])
def test_the_native_gradients_equal_the_eager_paths(flags, hkl):
    """Every parameter at once, float64: the C library's image and backward against torch's autograd through
    the eager path, within 1e-10 of each gradient's largest entry (float32 within 1e-3)."""
    sim = _sim(flags, hkl)
    ref_image, ref = _image_and_grads(sim, "eager")
    image, got = _image_and_grads(sim, "native")
    assert np.abs(image - ref_image).max() <= 1e-12 * np.abs(ref_image).max()
    for name, want in ref.items():
        scale = np.abs(want).max()
        assert np.abs(got[name] - want).max() <= 1e-10 * scale, name
    image32, got32 = _image_and_grads(sim, "native", torch.float32)
    assert np.abs(image32 - ref_image).max() <= 1e-3 * np.abs(ref_image).max()
    for name in ("misset", "cell", "N", "distance"):
        assert np.abs(got32[name] - ref[name]).max() <= 1e-3 * np.abs(ref[name]).max(), name


def test_the_backend_is_chosen_and_checked(hkl, monkeypatch, caplog):
    from bragg_dask.model import fastsum
    from bragg_dask.physics.backends import native
    from bragg_dask.physics.backends.toolchain import Toolchain

    sim = _sim("-detpixels 8", hkl)
    assert Model(sim).backend == "native" and Model(sim, backend="eager").backend == "eager"
    with pytest.raises(ConfigError, match="^backend: backend 'fast' is not one of auto, native, eager$"):
        Model(sim, backend="fast")
    # no C compiler: said once at WARNING, the eager path used (auto) or the native one refused
    monkeypatch.setattr(fastsum, "MODEL", native._Library("the model's library", "the eager path instead"))
    with caplog.at_level("WARNING"):
        assert fastsum.library(Toolchain(cc="no-such-compiler-here")) is None
        assert fastsum.library(Toolchain(cc="no-such-compiler-here")) is None
    assert [r.levelname for r in caplog.records].count("WARNING") == 1 and "eager path" in caplog.text
    built = Model(sim)  # (native, sent to a worker that cannot build the library: its chunks run eager)
    monkeypatch.setattr(fastsum, "library", lambda toolchain=None: None)
    assert Model(sim).backend == "eager"
    with torch.no_grad():
        assert torch.allclose(built(), Model(sim, backend="eager")(), rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="^backend: the model's C library could not be built"):
        Model(sim, backend="native")


def test_a_functional_call_and_its_backward_use_the_same_parameters(hkl):
    """The backward pass recomputes each chunk from the parameters the forward was given (a functional call's,
    not the module's own): the gradient at a moved point is that point's."""
    sim = _sim("-detpixels 12 -round_xtal", hkl)
    m = Model(sim, free=["distance"])
    moved = (m.distance.detach() + 3.0).requires_grad_(True)
    (functional_call(m, {"distance": moved}, ()).sum()).backward()
    m2 = Model(sim, free=["distance"])
    with torch.no_grad():
        m2.distance += 3.0
    m2().sum().backward()
    assert moved.grad is not None and m2.distance.grad is not None
    assert torch.allclose(moved.grad, m2.distance.grad, rtol=1e-12, atol=0)


REFUSED = [
    ("--parity", {"parity": "c"}, ""),
    ("-curved_det", {}, "-curved_det"),
    ("-dmin", {}, "-dmin 2"),
    ("-interpolate", {}, "-interpolate"),
    ("-oversample_thick", {}, "-oversample_thick -detector_thick 0.3 -detector_thicksteps 2"),
    ("-water", {"free": ["background"]}, ""),
    ("-mosaic_spread", {"free": ["mosaic_spread"]}, ""),
]


@pytest.mark.parametrize(("flag", "kwargs", "flags"), REFUSED, ids=[r[0] for r in REFUSED])
def test_what_the_model_does_not_compute_is_refused_in_one_line(flag, kwargs, flags, hkl):
    sim = _sim(f"-detpixels 8 {flags}", hkl)
    with pytest.raises(ConfigError) as err:
        Model(sim, **kwargs)
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)


def test_unknown_parameters_and_a_missing_table_are_refused():
    sim = _sim("-detpixels 8")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^--device: cuda: no CUDA device here$"):
            Model(sim, device="cuda")
    with pytest.raises(ConfigError, match="unknown parameter 'mosaic'"):
        Model(sim, free=["mosaic"])
    with pytest.raises(ConfigError, match="^-hkl: no table"):
        Model(sim, free=["structure_factors"])


def test_losses():
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    obs = np.array([[0.0, 2.0], [5.0, 1.0]])
    lam = image.numpy() * 2 + 1
    assert poisson_nll(image, obs, gain=2, offset=1).item() == pytest.approx(float((lam - obs * np.log(lam)).sum()))
    mask = np.array([[True, False], [True, True]])
    want = float(((lam - obs) ** 2)[mask].sum())
    assert least_squares(image, obs, mask, gain=2, offset=1).item() == pytest.approx(want)
    with pytest.raises(ValueError, match="mask: shape"):
        poisson_nll(image, obs, np.ones((3, 2), bool))


@pytest.fixture(scope="module")
def fitted_case(hkl):
    sim = _sim("-detpixels_f 23 -detpixels_s 19 -misset 10 20 30 -mosaic_spread 0.5 -mosaic_domains 2 -oversample 2",
               hkl)  # fmt: skip
    free = ["misset", "cell", "N", "distance", "beam_center", "structure_factors"]
    m = Model(sim, free=free)
    with torch.no_grad():
        obs = np.random.default_rng(0).poisson(m().numpy() + 1.0)
    mask = np.ones(sim.detector.shape, bool)
    mask[3:6, 4:9] = False
    return m, obs, mask, free


@pytest.mark.parametrize("tile", [5, 7, (3, 11)])
def test_the_tiled_gradient_equals_the_untiled_one(fitted_case, tile):
    m, obs, mask, free = fitted_case
    whole, g_whole = loss_and_grad(m, obs, mask, tile=10**6, offset=1.0)
    value, g = loss_and_grad(m, obs, mask, tile=tile, offset=1.0)
    assert abs(value.item() - whole.item()) <= 1e-12 * abs(whole.item())
    for name in free:
        assert (g[name] - g_whole[name]).abs().max() <= 1e-12 * g_whole[name].abs().max(), name
        assert torch.equal(getattr(m, name).grad, g[name])  # (in .grad too: an optimizer's step follows)


def test_the_gradient_on_the_embedded_cluster_equals_the_untiled_one(fitted_case):
    from distributed import Client, LocalCluster

    m, obs, mask, free = fitted_case
    whole, g_whole = loss_and_grad(m, obs, mask, tile=10**6, loss="least_squares")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            value, g = loss_and_grad(m, obs, mask, tile=6, client=client, loss="least_squares")
    assert abs(value.item() - whole.item()) <= 1e-12 * abs(whole.item())
    for name in free:
        assert (g[name] - g_whole[name]).abs().max() <= 1e-12 * g_whole[name].abs().max(), name


def test_a_fit_recovers_its_parameters(hkl):
    """A small fit (the refinement example, notebooks/refinement.ipynb, recovers misset, cell, distance and N
    from a start 0.5 degrees, 1%, 1 mm and 2 cells off; it runs with the notebooks): distance and scale from
    1 mm and 10% off, in-process and tile by tile."""
    sim = _sim("-detpixels 24 -round_xtal", hkl)
    truth = Model(sim)
    with torch.no_grad():
        observed = np.random.default_rng(3).poisson(truth().numpy() * 100 + 1.0)
    m = Model(sim, free=["distance", "scale"])
    with torch.no_grad():
        m.distance += 1.0
        m.scale.fill_(90.0)
    loss = fit(m, observed, offset=1.0, rounds=1, tile=8)
    assert abs(m.distance.item() - 60.0) < 0.05 and abs(m.scale.item() - 100.0) < 2.0
    assert loss == pytest.approx(loss_and_grad(m, observed, offset=1.0)[0].item(), rel=1e-12)
    with pytest.raises(TypeError, match="unknown option 'tiles'"):
        fit(m, observed, tiles=8)


def test_float32_forward_is_close_to_float64(hkl):
    sim = _sim("-detpixels 12 -mosaic_spread 0.5 -mosaic_domains 2", hkl)
    with torch.no_grad():
        ref = Model(sim).forward()
        got = Model(sim, dtype=torch.float32).forward()
    assert got.dtype == torch.float32
    assert ((got.double() - ref).abs().max() / ref.abs().max()).item() < 1e-4
