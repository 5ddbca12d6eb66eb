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
from bragg_dask.physics.lattice import ROUND_NORM, gauss_spot, reciprocal_radius_sq, sinc3, tophat_spot
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


def lattice_sq(delta: torch.Tensor, n: torch.Tensor, recip: torch.Tensor, shape: str, fudge: float) -> torch.Tensor:
    """``F_latt^2`` of fractional offsets ``delta`` ``(..., 3)`` from the nearest Miller index, ``n`` ``(3,)``
    cells (continuous), ``recip`` ``(3, 3)`` (1/Angstrom, for the gauss and tophat shapes): the eager path's
    formulas (:mod:`bragg_dask.physics.lattice`), their derivatives finite everywhere (an exactly integer
    index included: the square's ratio and the round shape's radius are taken apart from 0)."""
    if shape == "square":
        x = delta * math.pi
        zero = x == 0
        safe = torch.where(zero, torch.ones_like(x), x)
        ratio = torch.where(zero, n.expand_as(x), torch.sin(safe * n) / torch.sin(safe))
        r2 = ratio * ratio
        return r2[..., 0] * r2[..., 1] * r2[..., 2]
    n_prod = n[0] * n[1] * n[2]
    if shape == "round":
        h2 = (delta * delta * n * n).sum(-1) * fudge
        positive = h2 > 0
        x = math.pi * torch.sqrt(torch.where(positive, h2, torch.ones_like(h2)))
        f = n_prod * ROUND_NORM * torch.where(positive, sinc3(x), torch.ones_like(x))
    elif shape == "gauss":
        f = gauss_spot(reciprocal_radius_sq(delta, recip, n), n_prod, fudge)
    else:  # tophat
        f = tophat_spot(reciprocal_radius_sq(delta, recip, n), n_prod, fudge)
    return f * f


def padded_table(table: torch.Tensor | None, default_f: float) -> torch.Tensor | None:
    """The table of ``|F|`` ``(nh, nk, nl)`` with a plane of ``default_F`` on every side (an index clamped into
    it lands on ``default_F`` exactly where it is out of range), as the eager path's ``F2Lookup`` pads ``F^2``."""
    return None if table is None else torch.nn.functional.pad(table, (1, 1, 1, 1, 1, 1), value=default_f)


def f_cell_sq(hkl0: torch.Tensor, padded: torch.Tensor | None, hkl_min, default_f: float) -> torch.Tensor | float:
    """``F_cell^2`` at integer indices ``hkl0`` ``(..., 3)`` (float): of the :func:`padded_table` (first index
    ``hkl_min`` in the unpadded one), ``default_F^2`` without a table."""
    if padded is None:
        return default_f * default_f
    dims = padded.shape
    idx = [(hkl0[..., j] - (hkl_min[j] - 1)).clamp(0, dims[j] - 1).to(torch.int64) for j in range(3)]
    f = padded[idx[0], idx[1], idx[2]]
    return f * f


def pixel_values(model, fpix: torch.Tensor, spix: torch.Tensor, p: dict) -> torch.Tensor:
    """The values ``(P,)`` (photons) of pixels ``(fpix, spix)`` (integer tensors ``(P,)``) of ``model`` with the
    parameters ``p`` (name -> tensor): differentiable with respect to every one of them."""
    sim = model.sim
    det, cr, beam = sim.detector, sim.crystal, sim.beam
    dt, dev = model.dtype, model.device
    f, s, o, pix0 = model.plane(p)
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
    cells = model.orientations(p)  # (O, 3, 3)
    _, recip = model.axes(p)
    table = padded_table(p.get("structure_factors"), model.default_f)
    total = torch.zeros_like(r0)
    for src in range(incident.shape[0]):
        scatter = (d - incident[src]) / lam[src]  # (P, Q, 3) 1/m
        hkl = torch.einsum("pqj,oij->pqoi", scatter, cells)  # (P, Q, O, 3)
        hkl0 = torch.ceil(hkl.detach() - 0.5)
        term = lattice_sq(hkl - hkl0, p["N"], recip, cr.shape, cr.fudge)
        term = term * f_cell_sq(hkl0, table, cr.structure_factors.hkl_min, model.default_f)
        total = total + term.sum(dim=(1, 2))
    fluence = R_E_SQR * beam.fluence
    w = sim.water_size_m
    i_bg = WATER_F * WATER_F * fluence * w * w * w * 1e6 * AVOGADRO / WATER_MW  # (the eager kernel's)
    value = p["scale"][0] * fluence * (i_bg * p["background"][0] + total) / sim.steps
    return value * capture * polar * omega


def _capture(det, d: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The sensor's capture fraction ``(P,)`` of the last layer at its first sub-pixel (1 without a sensor)."""
    if det.thickness_m == 0.0:
        return torch.ones(d.shape[0], dtype=d.dtype, device=d.device)
    t = det.thicksteps - 1
    first = d[:, t * det.oversample * det.oversample]
    return layer_capture(det, o, first, torch.tensor(float(t), dtype=d.dtype, device=d.device))
