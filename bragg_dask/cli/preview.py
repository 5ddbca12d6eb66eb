"""``bragg-dask preview STORE [--frame K] -o frame.png [--rings]``: a picture of one frame of a store.

The float image (photons/pixel) on a log scale, ``log10(1 + photons)``, in a perceptual colour map
with a colour bar in photons/pixel; the direct beam marked where the store's geometry puts it;
optionally resolution rings labelled with their d-spacing (Angstrom).  Axes are in pixels from the
detector's corner: fast to the right, slow downwards, the origin at the top left, each pixel ``i``
spanning ``[i, i + 1)``.

A frame is read a band of tiles at a time (:meth:`bragg_dask.store.StoreFrame.bands`) and
max-pooled on the way to at most ``max_px`` (1024) pixels on its long side, so a large frame is never
held at full resolution and a one-pixel spot still shows.  Matplotlib is imported only here, and
only its Agg canvas is used: no display is needed and pyplot's backend (a notebook's, say) is left
as it is.  The PNG is written to a temporary file beside its path and renamed into place.

From Python: :func:`render` returns the matplotlib ``Figure`` (shown by a notebook) and writes it
where ``path`` says.  :func:`beam_position_px`, :func:`ring_radius_px`, :func:`d_spacing_A` and
:func:`pool_bands` are the pieces, usable on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
from typing import NoReturn

import numpy as np

from bragg_dask.errors import ConfigError, UsageError
from bragg_dask.io.atomic import temp_file
from bragg_dask.store import StoreFrame, check_frames, frame_record, store_metadata

#: the long side of the pooled image, in pixels, unless told otherwise
MAX_PX = 1024
#: the shortest long side a picture's image is drawn with (small detectors are enlarged, pixel for pixel)
MIN_DRAWN_PX = 480
DPI = 100
COLORMAP = "inferno"
#: the PNG is written with a palette of 256 colours: the colour map's levels, greys and the beam marker's
CMAP_LEVELS = 224


# ---------------------------------------------------------------------------------------- geometry


def beam_position_px(geometry: dict) -> tuple[float, float]:
    """``(fast, slow)``: where the direct beam meets the detector, in pixels from the detector's corner
    (pixel ``i`` spans ``[i, i + 1)``).

    The point where the beam vector through the sample crosses the detector plane (``pix0``,
    ``fdet``, ``sdet``, ``odet`` of the store's geometry).  That is the store's
    ``beam_center_fast_slow_m`` over the pixel size, except with ``-twotheta``, where the C program's
    derived beam centre (kept in the store as the C program has it) is not on the beam; the recorded
    centre is used where the vectors are missing or the beam does not reach the detector plane."""
    px = geometry["pixel_size_m"]
    keys = ("pix0_vector_m", "fdet_vector", "sdet_vector", "odet_vector", "beam_vector")
    if all(geometry.get(k) for k in keys):
        p0, f, s, o, b = (np.asarray(geometry[k], dtype=np.float64) for k in keys)
        along = float(b @ o)
        t = float(p0 @ o) / along if abs(along) > 1e-12 else -1.0
        if t > 0.0:
            hit = t * b - p0
            return float(hit @ f) / px, float(hit @ s) / px
    fb, sb = geometry["beam_center_fast_slow_m"]
    return fb / px, sb / px


def d_spacing_A(radius_px: float, geometry: dict) -> float:
    """The d-spacing (Angstrom) diffracting to ``radius_px`` pixels from the beam on a detector
    perpendicular to the beam at ``distance_m``: ``d = lambda / (2 sin(theta))``, ``tan(2 theta) = r / D``."""
    r = radius_px * geometry["pixel_size_m"]
    theta = 0.5 * math.atan2(r, geometry["distance_m"])
    if theta <= 0.0:
        return math.inf
    return geometry["wavelength_m"] / (2.0 * math.sin(theta)) * 1e10


def ring_radius_px(d_A: float, geometry: dict) -> float:
    """The radius (pixels) of the ring of d-spacing ``d_A`` (Angstrom), the inverse of
    :func:`d_spacing_A`; ``nan`` where that d cannot diffract onto a perpendicular detector."""
    s = geometry["wavelength_m"] / (2.0 * d_A * 1e-10)
    if not 0.0 < s < math.sqrt(0.5):  # 2 theta must stay below 90 degrees
        return math.nan
    two_theta = 2.0 * math.asin(s)
    return geometry["distance_m"] * math.tan(two_theta) / geometry["pixel_size_m"]


def _two_digits(x: float) -> float:
    return float(f"{x:.2g}")


def ring_d_spacings(geometry: dict, shape: tuple[int, int], n: int = 4) -> list[float]:
    """Up to ``n`` round d-spacings (Angstrom, two significant digits, largest first) whose rings
    cross the detector of ``shape`` ``(slow, fast)``, spread out to its farthest edge from the beam."""
    bf, bs = beam_position_px(geometry)
    s, f = shape
    reach = max(bf, f - bf, bs, s - bs)
    near = math.hypot(max(0.0, -bf, bf - f), max(0.0, -bs, bs - s))  # beam to the nearest detector point
    far = max(math.hypot(x - bf, y - bs) for x in (0, f) for y in (0, s))
    out = set()
    for k in range(1, n + 1):
        d = _two_digits(d_spacing_A(reach * k / n, geometry))
        r = ring_radius_px(d, geometry)
        if near <= r <= far:
            out.add(d)
    return sorted(out, reverse=True)


def _tilted(geometry: dict) -> bool:
    """Whether the detector is not perpendicular to the beam (the rings are then approximate)."""
    o, b = geometry.get("odet_vector"), geometry.get("beam_vector")
    if not o or not b:
        return False
    return abs(float(np.dot(o, b))) < 0.9999


# ----------------------------------------------------------------------------------------- pooling


def pool_factor(shape: tuple[int, int], max_px: int = MAX_PX) -> int:
    """The max-pool block side that brings the long side of ``shape`` to at most ``max_px``."""
    return max(1, math.ceil(max(shape) / max_px))


def pool_bands(bands, fpixels: int, factor: int) -> np.ndarray:
    """Max-pool an image given as bands of rows (``(s0, s1, band)`` in order, as
    :meth:`StoreFrame.bands` yields them) into ``factor`` x ``factor`` blocks, the last block of each
    axis possibly smaller; ``(ceil(slow / factor), ceil(fast / factor))`` float32.  Holds at most one
    band and ``factor - 1`` pooled rows at a time."""
    cols = np.arange(0, fpixels, factor)
    rows: list[np.ndarray] = []
    carry = np.empty((0, len(cols)), np.float32)
    for _, _, band in bands:
        b = np.maximum.reduceat(np.asarray(band, dtype=np.float32), cols, axis=1)
        b = np.concatenate([carry, b]) if len(carry) else b
        whole = (b.shape[0] // factor) * factor
        if whole:
            rows.append(b[:whole].reshape(-1, factor, b.shape[1]).max(axis=1))
        carry = b[whole:]
    if len(carry):
        rows.append(carry.max(axis=0, keepdims=True))
    return np.concatenate(rows) if rows else np.zeros((0, len(cols)), np.float32)


# ------------------------------------------------------------------------------------------- input


@dataclasses.dataclass(frozen=True)
class FrameView:
    """A frame ready to draw: its pooled image (photons/pixel), the pool factor, the full shape
    ``(slow, fast)``, the store's geometry and the frame's place in the store."""

    image: np.ndarray
    factor: int
    shape: tuple[int, int]
    geometry: dict
    frame: int
    n_frames: int
    phi0_deg: float
    name: str
    panels: int = 0  # a detector of panels: how many (the image their projection onto the first one's plane)


def load(store: str, frame: int = 0, max_px: int = MAX_PX) -> FrameView:
    """Read frame ``frame`` of ``store`` band by band, max-pooled to at most ``max_px`` on its long
    side.  No store, a frame out of range or an incomplete frame: a one-line error."""
    store = os.fspath(store)
    if not os.path.exists(store):
        raise UsageError(f"no store at {store}", flag="preview")
    try:
        rec = frame_record(store, frame)
    except ConfigError as exc:
        if exc.flag != "export":
            raise
        raise type(exc)(exc.message, flag="preview") from None
    if not rec.complete:
        raise ConfigError(
            f"frame {frame} of {store} is incomplete (re-run the simulation to finish it)", flag="--frame"
        )
    check_frames(store, [frame], None, "preview")  # a damaged frame: one line, before any file
    geometry = store_metadata(store)["geometry"]
    if geometry.get("panels"):
        return _load_panels(store, frame, max_px, rec, geometry)
    view = StoreFrame(store, frame, flag="preview")
    factor = pool_factor(view.shape, max_px)
    image = pool_bands(view.bands(view.FLOAT), view.shape[1], factor)
    return FrameView(
        image=image,
        factor=factor,
        shape=tuple(view.shape),
        geometry=geometry,
        frame=frame,
        n_frames=rec.n_frames,
        phi0_deg=rec.phi0_deg,
        name=os.path.basename(os.path.normpath(os.path.abspath(store))),
    )


def _load_panels(store: str, frame: int, max_px: int, rec, geometry: dict) -> FrameView:
    """A frame of a detector of panels as one picture: every panel where it is seen from the sample,
    projected onto the first panel's plane (coplanar modules: where they are in it, with their gaps),
    in that plane's pixels; gaps (and panels that plane cannot show: behind the sample) are NaN."""
    panels = geometry["panels"]
    px = float(geometry["pixel_size_m"])
    keys = ("fdet_vector", "sdet_vector", "odet_vector", "pix0_vector_m")
    planes = [tuple(np.asarray(p[k], dtype=np.float64) for k in keys) for p in panels]
    f0, s0, o0, p0 = planes[0]
    n_s, n_f = (int(n) for n in StoreFrame(store, frame, flag="preview", panel=0).shape)
    corners = []
    for f, s, _o, p in planes:
        for cf, cs in ((0, 0), (n_f, 0), (0, n_s), (n_f, n_s)):
            x = p + cf * px * f + cs * px * s
            if x @ o0 > 0:  # in front of the sample as the first panel's plane sees it
                y = x * (p0 @ o0) / (x @ o0) - p0
                corners.append((y @ f0 / px, y @ s0 / px))
    uv = np.asarray(corners)
    (u0, v0), (u1, v1) = np.floor(uv.min(axis=0)), np.ceil(uv.max(axis=0))
    factor = pool_factor((int(v1 - v0), int(u1 - u0)), max_px)
    ns, nf = math.ceil((v1 - v0) / factor), math.ceil((u1 - u0) / factor)
    u = u0 + (np.arange(nf) + 0.5) * factor
    v = v0 + (np.arange(ns) + 0.5) * factor
    points = p0 + (u[None, :, None] * f0 + v[:, None, None] * s0) * px  # (ns, nf, 3): the canvas in plane 0
    canvas = np.full((ns, nf), np.nan, dtype=np.float32)
    for k, (f, s, o, p) in enumerate(planes):
        view = StoreFrame(store, frame, flag="preview", panel=k)
        pooled = pool_bands(view.bands(view.FLOAT), n_f, factor)
        along = points @ o
        with np.errstate(divide="ignore", invalid="ignore"):
            hit = points * ((p @ o) / along)[..., None] - p  # the ray through each canvas point, on panel k
        fi, si = hit @ f / px, hit @ s / px
        inside = (along > 0) & (fi >= 0) & (fi < n_f) & (si >= 0) & (si < n_s)
        values = pooled[(si[inside] // factor).astype(int), (fi[inside] // factor).astype(int)]
        canvas[inside] = np.fmax(canvas[inside], values)
    plane = dict(geometry)  # the canvas's plane: the first panel's, its corner moved to the canvas's
    plane["pix0_vector_m"] = list(p0 + u0 * px * f0 + v0 * px * s0)
    return FrameView(
        image=canvas,
        factor=factor,
        shape=(int(v1 - v0), int(u1 - u0)),
        geometry=plane,
        frame=frame,
        n_frames=rec.n_frames,
        phi0_deg=rec.phi0_deg,
        name=os.path.basename(os.path.normpath(os.path.abspath(store))),
        panels=len(panels),
    )


# ----------------------------------------------------------------------------------------- drawing


def _colorbar_ticks(vmax: float) -> list[float]:
    """Photon values for the colour bar's ticks, up to ``vmax``: 0 and the 1-2-5 steps from 1 (decades
    alone when those are many), or evenly spaced values for a faint image."""
    if vmax < 2.0:
        return [float(f"{v:.2g}") for v in np.linspace(0.0, vmax, 4)]
    steps = [m * 10.0**e for e in range(0, 12) for m in (1, 2, 5)]
    ticks = [0.0] + [v for v in steps if v <= vmax]
    if len(ticks) > 7:
        ticks = [0.0] + [10.0**e for e in range(0, 12) if 10.0**e <= vmax]
    return ticks


def _layout(view: FrameView):
    """The figure's size (inches) and the image's and colour bar's rectangles (figure fractions): the
    image drawn about one screen pixel per pooled pixel, small detectors enlarged."""
    ns, nf = view.image.shape
    scale = max(1.0, MIN_DRAWN_PX / max(ns, nf, 1))
    w, h = nf * scale / DPI, ns * scale / DPI
    left, right, bottom, top = 0.75, 1.25, 0.95, 0.45
    fw, fh = left + w + right, bottom + h + top
    image_rect = (left / fw, bottom / fh, w / fw, h / fh)
    bar_rect = ((left + w + 0.15) / fw, bottom / fh, 0.18 / fw, h / fh)
    return (fw, fh), image_rect, bar_rect


def figure(view: FrameView, rings: bool = False):
    """The matplotlib ``Figure`` of ``view`` (Agg canvas; nothing is shown)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size, image_rect, bar_rect = _layout(view)
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes(image_rect)
    s, f = view.shape
    k = view.factor
    ns, nf = view.image.shape
    photons = np.maximum(view.image, 0.0)  # (NaN: a gap between panels, drawn as the background)
    peak = float(np.nanmax(photons)) if np.isfinite(photons).any() else 0.0
    vmax = math.log10(1.0 + peak) if peak > 0 else 1.0
    im = ax.imshow(
        np.log10(1.0 + photons),
        cmap=_colormap(),
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
        extent=(0, nf * k, ns * k, 0),
        origin="upper",
    )
    ax.set_xlim(0, f)
    ax.set_ylim(s, 0)
    ax.set_xlabel("fast (pixels)" + (f"; each image pixel the max of {k} x {k}" if k > 1 else ""))
    ax.set_ylabel("slow (pixels)")
    panels = f"\n{view.panels} panels, seen from the sample in the first one's plane" if view.panels else ""
    ax.set_title(
        f"{view.name}: frame {view.frame} of {view.n_frames}, phi = {view.phi0_deg:.4g} deg{panels}", fontsize=10
    )
    bar = fig.colorbar(im, cax=fig.add_axes(bar_rect))
    ticks = _colorbar_ticks(peak)
    bar.set_ticks([math.log10(1.0 + v) for v in ticks], labels=[f"{v:g}" for v in ticks])
    bar.set_label("photons/pixel (log scale: log10(1 + photons))")
    bf, bs = beam_position_px(view.geometry)
    ax.plot(
        [bf], [bs], linestyle="none", marker="+", markersize=14, markeredgewidth=1.6, color="cyan", label="direct beam"
    )
    if rings:
        _draw_rings(ax, view)
    x0, _, w, _ = image_rect
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(x0 + w / 2, 0.01),
        bbox_transform=fig.transFigure,
        ncol=2,
        fontsize=8,
        facecolor="0.3",
        edgecolor="0.3",
        labelcolor="white",
    )
    return fig


def _ring_label_at(bf: float, bs: float, r: float, shape: tuple[int, int]) -> tuple[float, float] | None:
    """A point of the ring (centre ``bf, bs``, radius ``r``) inside the detector to put its label at,
    trying the diagonals first; ``None`` when none is."""
    s, f = shape
    for deg in (-45, -135, 45, 135, -90, 0, 180, 90, -22.5, -67.5, -112.5, -157.5):
        x = bf + r * math.cos(math.radians(deg))
        y = bs + r * math.sin(math.radians(deg))
        if 0.03 * f <= x <= 0.97 * f and 0.03 * s <= y <= 0.97 * s:
            return x, y
    return None


def _draw_rings(ax, view: FrameView) -> None:
    from matplotlib.patches import Circle

    bf, bs = beam_position_px(view.geometry)
    label = "resolution rings, d in \u00c5"
    if _tilted(view.geometry):
        label += ", detector taken as perpendicular to the beam"
    for i, d in enumerate(ring_d_spacings(view.geometry, view.shape)):
        r = ring_radius_px(d, view.geometry)
        ax.add_patch(
            Circle(
                (bf, bs),
                r,
                fill=False,
                color="white",
                alpha=0.75,
                linestyle="--",
                linewidth=0.9,
                label=label if i == 0 else None,
            )
        )
        at = _ring_label_at(bf, bs, r, view.shape)
        if at is not None:
            ax.text(
                at[0],
                at[1],
                f"{d:g} \u00c5",
                color="white",
                fontsize=8,
                ha="center",
                va="center",
                bbox=dict(boxstyle="round,pad=0.15", facecolor="black", alpha=0.5, linewidth=0),
            )


# ------------------------------------------------------------------------------------------ output


def check_output(path: str) -> None:
    """``path`` can take the PNG: not empty, not a folder, in a writable folder (else one line)."""
    if not path:
        raise UsageError("give the picture's path: -o FILE.png", flag="-o")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder", flag="-o")
    if not os.path.isdir(folder):
        raise UsageError(f"folder {folder} does not exist", flag="-o")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"folder {folder} is not writable", flag="-o")


def _colormap():
    import matplotlib

    return matplotlib.colormaps[COLORMAP].resampled(CMAP_LEVELS)


def _palette() -> list[int]:
    """The PNG's 256 colours (RGB, flat): the colour map's levels, 28 greys, 4 shades of the marker's cyan."""
    cmap = (np.asarray(_colormap()(np.linspace(0.0, 1.0, CMAP_LEVELS)))[:, :3] * 255).round()
    greys = np.repeat(np.linspace(0, 255, 28).round()[:, None], 3, axis=1)
    cyan = np.array([[0, 255, 255], [0, 191, 191], [0, 128, 128], [128, 255, 255]], float)
    return np.concatenate([cmap, greys, cyan]).astype(int).ravel().tolist()


def png_bytes(fig) -> bytes:
    """``fig`` as an 8-bit palette PNG (:func:`_palette`: the image's colours exactly, about a third of
    the size of a full-colour PNG)."""
    import io

    from PIL import Image

    fig.canvas.draw()
    rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
    pal = Image.new("P", (1, 1))
    pal.putpalette(_palette())
    out = io.BytesIO()
    rgb.quantize(palette=pal, dither=Image.Dither.NONE).save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_png(fig, path: str) -> str:
    """Write ``fig`` to ``path`` as a PNG, through a temporary file beside it renamed into place."""
    data = png_bytes(fig)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = temp_file(folder, f".{os.path.basename(path)}.", ".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write in {folder}: {exc.strerror}", flag="-o") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"writing {path} failed: {exc.strerror or exc}", flag="-o") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def render(store, frame: int = 0, *, rings: bool = False, path: str | None = None, max_px: int = MAX_PX):
    """The picture of frame ``frame`` of ``store`` as a matplotlib ``Figure``; written as a PNG to
    ``path`` when given.  ``rings``: resolution rings; ``max_px``: the long side of the pooled image."""
    if path is not None:
        path = os.fspath(path)
        check_output(path)  # before reading anything
        from bragg_dask.nanobragg.checks import check_paths

        check_paths([("-o", path)], inputs=[("STORE", os.fspath(store))])  # never into a store
    if not isinstance(max_px, int) or isinstance(max_px, bool) or max_px < 16:
        raise UsageError(f"must be an integer >= 16, got {max_px!r}", flag="--max-px")
    fig = figure(load(store, frame, max_px), rings=rings)
    if path is not None:
        save_png(fig, path)
    return fig


# --------------------------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, flag="preview")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="bragg-dask preview", add_help=False)
    ap.add_argument("store")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--rings", action="store_true")
    ap.add_argument("--max-px", type=int, default=MAX_PX, dest="max_px")
    return ap


def preview_main(argv: list[str]) -> list[str]:
    """``bragg-dask preview STORE [--frame K] -o FILE.png [--rings] [--max-px N]``; returns the path written."""
    a = _parser().parse_args(argv)
    render(a.store, a.frame, rings=a.rings, path=a.output, max_px=a.max_px)
    return [a.output]
