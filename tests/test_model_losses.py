"""bragg_dask.loss_and_grad beyond one plain image: the detector's point-spread function in the loss (the
image spread as noisify spreads it, each tile with its halo, the whole image's tail by the chain rule: equal to
autograd through the whole image, tiled or not, on a cluster too), and a stack of frames sharing their
parameters (equal to the frames' losses and gradients added)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bragg_dask import simulation_from_args
from bragg_dask.detector.psf import PSF, apply_psf, make_kernel, tail_fraction
from bragg_dask.errors import ConfigError
from bragg_dask.model import Model, loss_and_grad, poisson_nll

FLAGS = "-cell 40 50 60 90 90 90 -default_F 100 -N 5 -lambda 1.2 -distance 60 -pixel 0.4 -detpixels_f 23 "
FLAGS += "-detpixels_s 19 -misset 10 20 30 -nonoise -nopgm"
FREE = ["misset", "cell", "distance", "N"]


def _sim(extra: str = ""):
    return simulation_from_args(f"{FLAGS} {extra}".split(), cwd=".")


@pytest.fixture(scope="module")
def case():
    m = Model(_sim(), free=FREE)
    with torch.no_grad():
        observed = np.random.default_rng(0).poisson(m().numpy() * 2.0 + 3.0)
    mask = np.ones(m.sim.detector.shape, bool)
    mask[4:7, 2:9] = False
    return m, observed, mask


def _whole_image_loss(m, psf: PSF, observed, mask) -> tuple[float, dict]:
    """The reference: autograd through the whole image spread by the PSF (its tail from the image's sum)."""
    r = psf.radius
    image = m()
    k = make_kernel(psf, r)
    spread = torch.nn.functional.conv2d(torch.nn.functional.pad(image, (r, r, r, r))[None, None], k[None, None])
    expected = spread[0, 0] + image.sum() * (float(tail_fraction(psf, r)) / image.numel())
    with torch.no_grad():  # (the same image as the detector model's own PSF gives it)
        assert torch.allclose(expected, apply_psf(psf, image), rtol=1e-12, atol=0)
    loss = poisson_nll(expected, observed, mask, gain=2.0, offset=3.0)
    grads = torch.autograd.grad(loss, [getattr(m, n) for n in FREE])
    return loss.item(), dict(zip(FREE, grads))


@pytest.mark.parametrize("kind", ["gauss", "fiber"])
@pytest.mark.parametrize("tile", [10**6, 5, (4, 9)])
def test_the_psf_loss_tile_by_tile_equals_autograd_through_the_whole_image(case, kind, tile):
    m, observed, mask = case
    psf = PSF(kind, 1.5, 4, 23)
    want, g_want = _whole_image_loss(m, psf, observed, mask)
    value, g = loss_and_grad(m, observed, mask, tile=tile, gain=2.0, offset=3.0, psf=psf)
    assert abs(value.item() - want) <= 1e-12 * abs(want)
    for name in FREE:
        assert (g[name] - g_want[name]).abs().max() <= 1e-10 * g_want[name].abs().max(), name
    plain, g_plain = loss_and_grad(m, observed, mask, tile=tile, gain=2.0, offset=3.0)
    assert abs(plain.item() - value.item()) > 1e-6 * abs(value.item())  # (the PSF changes the loss)


def test_the_psf_loss_on_the_embedded_cluster(case):
    from distributed import Client, LocalCluster

    m, observed, mask = case
    psf = PSF("gauss", 1.5, 3, 23)
    want, g_want = loss_and_grad(m, observed, mask, tile=6, gain=2.0, offset=3.0, psf=psf)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            value, g = loss_and_grad(m, observed, mask, tile=6, gain=2.0, offset=3.0, psf=psf, client=client)
    assert value.item() == want.item()
    for name in FREE:
        assert (g[name] - g_want[name]).abs().max() <= 1e-12 * g_want[name].abs().max(), name


def test_a_psf_without_a_radius_is_refused(case):
    m, observed, _ = case
    with pytest.raises(ValueError, match="^psf: give its radius"):
        loss_and_grad(m, observed, psf=PSF("gauss", 1.5, None, 23))


def test_a_stack_of_frames_is_the_frames_added():
    first = Model(_sim("-phi 0 -osc 1"), free=FREE)
    frames = [first, first.frame(_sim("-phi 1 -osc 1")), first.frame(_sim("-phi 2 -osc 1"))]
    assert all(getattr(f, n) is getattr(first, n) for f in frames for n in FREE)
    with torch.no_grad():
        observed = [np.random.default_rng(j).poisson(f().numpy() + 1.0) for j, f in enumerate(frames)]
    assert not np.array_equal(observed[0], observed[1])
    value, g = loss_and_grad(frames, observed, tile=7, offset=1.0)
    assert torch.equal(first.misset.grad, g["misset"])  # (the shared parameters' .grad: the sum's)
    parts = [loss_and_grad(f, o, tile=7, offset=1.0) for f, o in zip(frames, observed)]
    assert abs(value.item() - sum(p[0].item() for p in parts)) <= 1e-12 * abs(value.item())
    for name in FREE:
        want = sum(p[1][name] for p in parts)
        assert (g[name] - want).abs().max() <= 1e-12 * want.abs().max(), name
    stacked, _ = loss_and_grad(frames, np.stack(observed), tile=7, offset=1.0)  # (an array of frames)
    assert stacked.item() == value.item()


def test_frames_that_do_not_share_their_parameters_are_refused():
    a, b = Model(_sim(), free=FREE), Model(_sim("-phi 1"), free=FREE)
    obs = np.zeros(a.sim.detector.shape)
    with pytest.raises(ValueError, match="do not share their free parameters"):
        loss_and_grad([a, b], [obs, obs])
    with pytest.raises(ValueError, match="^observed: 1 frames"):
        loss_and_grad([a, a.frame(_sim("-phi 1"))], [obs])
    with pytest.raises(ConfigError, match="detector differs"):
        a.frame(_sim("-detpixels 8"))


def test_a_fit_through_the_psf_recovers_the_distance():
    from bragg_dask.model import fit

    psf = PSF("gauss", 2.0, 4, 31)
    truth = Model(_sim("-detpixels 31"))
    with torch.no_grad():
        blurred = apply_psf(psf, truth()).numpy()
    observed = np.random.default_rng(1).poisson(blurred * 50 + 1.0)
    m = Model(_sim("-detpixels 31"), free=["distance"])
    with torch.no_grad():
        m.distance += 0.5
    fit(m, observed, gain=50.0, offset=1.0, psf=psf, rounds=1, max_iter=20)
    assert abs(m.distance.item() - truth.distance.item()) < 0.05


def test_bad_observed_images_and_options_are_refused_in_one_line(case):
    m, observed, mask = case
    bad = observed.astype(float)
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"^observed: nan at pixel \(2, 3\)"):
        loss_and_grad(m, bad)
    keep = np.ones_like(mask)
    keep[2, 3] = False
    loss_and_grad(m, bad, keep)  # (masked out: fine)
    with pytest.raises(ValueError, match="^psf: dict, not a"):
        loss_and_grad(m, observed, psf={"fwhm": 1})
    with pytest.raises(TypeError, match="unknown option 'gian'"):
        loss_and_grad(m, observed, gian=2.0)
    with pytest.raises(ValueError, match="^loss: 'l1' is not one of"):
        loss_and_grad(m, observed, loss="l1")
    with pytest.raises(ValueError, match="^observed: shape"):
        loss_and_grad(m, observed[:5])


def test_the_models_options_are_checked():
    sim = _sim()
    assert Model(sim, free="distance").free == ("distance",)  # (one name alone)
    with pytest.raises(ConfigError, match="^dtype: torch.float16: the model computes in float64 or float32"):
        Model(sim, dtype=torch.float16)
    with pytest.raises(ConfigError, match="^--device: 'tpu'"):
        Model(sim, device="tpu")
    with pytest.raises(ConfigError, match="^--device: 'meta': the model runs on cpu or cuda"):
        Model(sim, device="meta")
    m32 = Model(sim, free=FREE, dtype=torch.float32)
    assert m32().dtype == torch.float32 and m32.misset.dtype == torch.float32


def test_a_fit_of_a_stack_of_frames_recovers_the_misset():
    from bragg_dask.model import fit

    truth = [Model(_sim(f"-phi {k} -osc 1 -round_xtal")) for k in range(3)]
    with torch.no_grad():  # (the expected counts themselves: the fit's optimum is the truth)
        observed = [t().numpy() + 1.0 for t in truth]
    first = Model(_sim("-phi 0 -osc 1 -round_xtal"), free=["misset"])
    frames = [first] + [first.frame(_sim(f"-phi {k} -osc 1 -round_xtal")) for k in (1, 2)]
    with torch.no_grad():
        first.misset += 0.3
    fit(frames, observed, offset=1.0, rounds=1, max_iter=30)
    assert (first.misset - truth[0].misset).abs().max().item() < 1e-4
