"""The differentiable forward pass: a pixel's value as a function of the model's parameters, in torch.

The same physics as the eager kernel (:func:`bragg_dask.physics.kernel.pixel_values`, spec mode) written
on tensors that carry gradients: the cell vectors from the cell and misset, each (phi step, mosaic domain)
orientation from the spread, the detector plane from its distance, beam centre and rotation, then every
pixel's sub-pixel points, scattering vectors per source, ``F_latt^2 F_cell^2`` summed over orientations,
and the solid angle, sensor capture and polarization of its first point.  Where the forward cannot be
differentiated (the nearest Miller index, a flat top's edge) the derivative is that of the smooth part.

Part of :mod:`bragg_dask.model`.
"""

from __future__ import annotations

import math

import torch

from bragg_dask.physics.constants import AVOGADRO, R_E_SQR, WATER_F, WATER_MW
from bragg_dask.physics.lattice import ROUND_NORM, gauss_spot, sinc3, tophat_spot
from bragg_dask.physics.pixels import layer_capture
from bragg_dask.physics.polarization import kahn_factor, solid_angle


def rotation_xyz(angles_rad: torch.Tensor) -> torch.Tensor:
    """``Rz Ry Rx`` ``(3, 3)`` of ``angles_rad`` ``(3,)`` (the C program's ``rotate``)."""
    cx, cy, cz = torch.cos(angles_rad).unbind()
    sx, sy, sz = torch.sin(angles_rad).unbind()
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx]).view(3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy]).view(3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one]).view(3, 3)
    return rz @ ry @ rx


def rotation_axis(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' ``(3, 3)`` rotation by ``angle`` (radians) about the unit ``axis`` ``(3,)``."""
    x, y, z = axis.unbind()
    zero = torch.zeros_like(angle)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero]).view(3, 3)
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + torch.sin(angle) * k + (1.0 - torch.cos(angle)) * (k @ k)


def standard_reciprocal(cell: torch.Tensor) -> torch.Tensor:
    """Rows ``a*, b*, c*`` (1/Angstrom) of ``cell`` ``(6,)`` (lengths in Angstrom, angles in degrees) in the
    standard frame (``a*`` along x, ``b*`` in the xy plane, so ``c`` along z), the exact duals.  (The C
    program's default frame is this one with a ``c*`` a little off for an oblique cell, its real lengths then
    forced: the simulation's cell is what it built, which the model starts from.)"""
    a, b, c = cell[0], cell[1], cell[2]
    al, be, ga = torch.deg2rad(cell[3:6]).unbind()
    cos_al, cos_be, cos_ga = torch.cos(al), torch.cos(be), torch.cos(ga)
    sin_al, sin_be, sin_ga = torch.sin(al), torch.sin(be), torch.sin(ga)
    volume = a * b * c * torch.sqrt(1.0 - cos_al**2 - cos_be**2 - cos_ga**2 + 2.0 * cos_al * cos_be * cos_ga)
    a_s, b_s, c_s = b * c * sin_al / volume, c * a * sin_be / volume, a * b * sin_ga / volume
    sin_gs = c / (volume * a_s * b_s)
    cos_as = (cos_be * cos_ga - cos_al) / (sin_be * sin_ga)
    cos_bs = (cos_ga * cos_al - cos_be) / (sin_ga * sin_al)
    cos_gs = (cos_al * cos_be - cos_ga) / (sin_al * sin_be)
    zero = torch.zeros_like(a)
    return torch.stack(
        [
            torch.stack([a_s, zero, zero]),
            torch.stack([b_s * cos_gs, b_s * sin_gs, zero]),
            torch.stack([c_s * cos_bs, c_s * (cos_as - cos_bs * cos_gs) / sin_gs, 1.0 / c]),
        ]
    )


def dual(vectors: torch.Tensor) -> torch.Tensor:
    """The dual basis (rows) of ``vectors`` (rows): real from reciprocal and back."""
    v0, v1, v2 = vectors.unbind()
    cross = torch.stack([torch.linalg.cross(v1, v2), torch.linalg.cross(v2, v0), torch.linalg.cross(v0, v1)])
    return cross / torch.dot(v0, cross[0])


def crystal_axes(cell: torch.Tensor, misset_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(real, reciprocal)``: rows ``a, b, c`` (metres) and ``a*, b*, c*`` (1/Angstrom) of the cell in its
    standard frame rotated by the misset (``Rz Ry Rx``, as the C program rotates its reciprocal vectors)."""
    recip = standard_reciprocal(cell) @ rotation_xyz(torch.deg2rad(misset_deg)).T
    return dual(recip) * 1e-10, recip


def orientations(real: torch.Tensor, crystal, spread_deg: torch.Tensor, axes, angles) -> torch.Tensor:
    """Every (phi step, domain)'s cell vectors ``(O, 3, 3)`` (rows a, b, c, metres), as the eager kernel
    orders them (:func:`bragg_dask.physics.crystal.rotated_cells`): ``U_m R_spindle(phi_k)``; each domain's
    ``U_m`` the rotation about its axis by its angle per unit spread times the spread."""
    dt, dev = real.dtype, real.device
    spindle = torch.as_tensor(crystal.spindle_axis, dtype=dt, device=dev)
    out = []
    for k in range(crystal.phisteps):
        phi = crystal.phi0_rad + crystal.phistep_rad * k
        abc = real if phi == 0.0 else real @ rotation_axis(spindle, torch.tensor(phi, dtype=dt, device=dev)).T
        for m in range(len(crystal.mosaic_umats)):
            if crystal.mosaic_spread_rad > 0.0 and angles[m] > 0.0:
                u = rotation_axis(axes[m], torch.deg2rad(spread_deg[0]) * float(angles[m]))
                out.append(abc @ u.T)
            else:
                out.append(abc)
    return torch.stack(out)


def lattice_sq(delta, n: torch.Tensor, recip: torch.Tensor, shape: str, fudge: float) -> torch.Tensor:
    """``F_latt^2`` of the fractional offsets ``delta`` from the nearest Miller index (three tensors, h, k, l),
    ``n`` ``(3,)`` cells (continuous), ``recip`` ``(3, 3)`` (rows a*, b*, c*, 1/Angstrom: the gauss and tophat
    shapes): the eager path's formulas (:mod:`bragg_dask.physics.lattice`), their derivatives finite everywhere
    (an exactly integer index included: the square's ratio and the round shape's radius are taken apart from
    0)."""
    if shape == "square":
        out = None
        for d, n_i in zip(delta, n.unbind()):
            x = d * math.pi
            zero = x == 0
            safe = torch.where(zero, torch.ones_like(x), x)
            ratio = torch.where(zero, n_i.expand_as(x), torch.sin(safe * n_i) / torch.sin(safe))
            out = ratio * ratio if out is None else out * (ratio * ratio)
        assert out is not None
        return out
    n_prod = n[0] * n[1] * n[2]
    if shape == "round":
        h2 = (delta[0] * delta[0] * n[0] * n[0] + delta[1] * delta[1] * n[1] * n[1]
              + delta[2] * delta[2] * n[2] * n[2]) * fudge  # fmt: skip
        positive = h2 > 0
        x = math.pi * torch.sqrt(torch.where(positive, h2, torch.ones_like(h2)))
        f = n_prod * ROUND_NORM * torch.where(positive, sinc3(x), torch.ones_like(x))
        return f * f
    v = [delta[0] * recip[0, k] + delta[1] * recip[1, k] + delta[2] * recip[2, k] for k in range(3)]
    r2 = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]) * (n * n).prod()  # (reciprocal_radius_sq's)
    f = gauss_spot(r2, n_prod, fudge) if shape == "gauss" else tophat_spot(r2, n_prod, fudge)
    return f * f


def padded_table(table: torch.Tensor | None, default_f: float) -> torch.Tensor | None:
    """The table of ``|F|`` ``(nh, nk, nl)`` with a plane of ``default_F`` on every side (an index clamped into
    it lands on ``default_F`` exactly where it is out of range), as the eager path's ``F2Lookup`` pads ``F^2``."""
    return None if table is None else torch.nn.functional.pad(table, (1, 1, 1, 1, 1, 1), value=default_f)


def f_cell_sq(index, padded: torch.Tensor | None, first, default_f: float) -> torch.Tensor | float:
    """``F_cell^2`` at the integer indices ``index`` (three float tensors, h, k, l): of the :func:`padded_table`
    (whose first index is ``first``), ``default_F^2`` without a table."""
    if padded is None:
        return default_f * default_f
    dims = padded.shape
    idx = [(index[j] - first[j]).clamp(0, dims[j] - 1).to(torch.int64) for j in range(3)]
    f = padded[idx[0], idx[1], idx[2]]
    return f * f


def orientation_sums(s: torch.Tensor, cells: torch.Tensor, n, recip, padded, spec) -> torch.Tensor:
    """The eager path of the model's orientation sum: ``(M,)`` sums over orientations of ``F_latt^2 F^2`` at the
    scattering vectors ``s`` ``(3, M)`` (1/m), of the orientations' cells ``(O, 3, 3)`` (rows a, b, c, metres);
    ``spec`` a :class:`~.fastsum.SumSpec`.  Each of h, k, l its own ``(O, M)`` tensor (points innermost)."""
    c = cells.reshape(-1, 9)
    deltas, index = [], []
    for i in range(3):
        h = c[:, 3 * i, None] * s[0] + c[:, 3 * i + 1, None] * s[1] + c[:, 3 * i + 2, None] * s[2]
        h0 = torch.ceil(h.detach() - 0.5)
        deltas.append(h - h0)
        index.append(h0)
    lat = lattice_sq(deltas, n, recip, spec.shape, spec.fudge)
    return (lat * f_cell_sq(index, padded, spec.first, spec.default_f)).sum(0)


def scattering(model, pixels: tuple, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, factors)`` of ``pixels`` ``(fpix, spix, panel)`` (integer tensors ``(P,)`` and the panel, 0 for a
    single plane) of ``model`` with the parameters ``p`` (name -> tensor): the scattering vectors ``(3, S P Q)``
    (1/m; sources outermost, then pixels, then their sub-pixel points) and each pixel's solid angle, sensor
    capture and polarization ``(P,)``."""
    fpix, spix, panel = pixels
    sim = model.sim.panel(panel)
    det, beam = sim.detector, sim.beam
    dt, dev = model.dtype, model.device
    f, s, o, pix0 = model.plane(p, panel)
    # sub-pixel points (layer, subS, subF), C loop order
    os_, sub = det.oversample, det.pixel_size_m / det.oversample
    k = torch.arange(os_, dtype=dt, device=dev)
    fm = sub * (fpix.to(dt)[:, None] * os_ + k) + sub / 2.0  # (P, os)
    sm = sub * (spix.to(dt)[:, None] * os_ + k) + sub / 2.0
    layers = torch.arange(det.thicksteps, dtype=dt, device=dev) * det.thickstep_m
    pos = (
        fm[:, None, None, :, None] * f + sm[:, None, :, None, None] * s + layers[None, :, None, None, None] * o + pix0
    ).reshape(fpix.shape[0], -1, 3)  # (P, Q, 3)
    air = torch.linalg.vector_norm(pos, dim=-1)
    d = pos / air[..., None]
    r0 = air[:, 0]
    omega = solid_angle(r0, det.pixel_size_m, torch.dot(pix0, o), det.point_pixel)
    capture = _capture(det, d, o)
    incident = torch.as_tensor([src.incident for src in beam.sources], dtype=dt, device=dev)
    lam0 = torch.as_tensor([src.wavelength_m for src in beam.sources], dtype=dt, device=dev)
    lam = lam0 * (p["wavelength"][0] * 1e-10 / beam.wavelength_m)
    if beam.nopolar:
        polar = torch.ones_like(r0)
    else:
        axis = torch.as_tensor(beam.polar_vector, dtype=dt, device=dev)
        polar = kahn_factor(beam.polarization, incident[0].expand_as(d[:, 0]), d[:, 0], axis)
    scatter = (d[None] - incident[:, None, None, :]) / lam[:, None, None, None]  # (S, P, Q, 3)
    return scatter.reshape(-1, 3).T.contiguous(), capture * polar * omega


def pixel_sum(model, sums: torch.Tensor, factors: torch.Tensor, p: dict, panel: int = 0) -> torch.Tensor:
    """The pixels' values ``(P,)`` (photons) of panel ``panel`` from their points' orientation sums ``sums``
    ``(S P Q,)`` and their ``factors`` ``(P,)`` (:func:`scattering`'s)."""
    sim = model.sim.panel(panel)
    beam = sim.beam
    total = sums.view(len(beam.sources), factors.shape[0], -1).sum(dim=(0, 2))
    fluence = R_E_SQR * beam.fluence
    w = sim.water_size_m
    i_bg = WATER_F * WATER_F * fluence * w * w * w * 1e6 * AVOGADRO / WATER_MW  # (the eager kernel's)
    value = p["scale"][0] * fluence * (i_bg * p["background"][0] + total) / sim.steps
    return value * factors


def pixel_values(model, pixels: tuple, p: dict, crystal=None) -> torch.Tensor:
    """The values ``(P,)`` (photons) of ``pixels`` ``(fpix, spix, panel)`` (:func:`scattering`) of ``model`` with
    the parameters ``p`` (name -> tensor), on the eager path: differentiable with respect to every one of them.
    ``crystal``: ``(cells, recip, padded table)`` where already made from ``p`` (:meth:`Model.crystal`)."""
    s, factors = scattering(model, pixels, p)
    cells, recip, padded = crystal if crystal is not None else model.crystal(p)
    sums = orientation_sums(s, cells, p["N"], recip, padded, model.sum_spec)
    return pixel_sum(model, sums, factors, p, pixels[2])


def _capture(det, d: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The sensor's capture fraction ``(P,)`` of the last layer at its first sub-pixel (1 without a sensor)."""
    if det.thickness_m == 0.0:
        return torch.ones(d.shape[0], dtype=d.dtype, device=d.device)
    t = det.thicksteps - 1
    first = d[:, t * det.oversample * det.oversample]
    return layer_capture(det, o, first, torch.tensor(float(t), dtype=d.dtype, device=d.device))
