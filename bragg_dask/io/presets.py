"""Detector presets (``--detector NAME``): the module layouts of real modular detectors.

A preset is a full frame of ``n_fast_total x n_slow_total`` pixels of ``pixel_m`` (the image the
detector's software writes, gaps included) and the modules that cover it: identical ``n_fast x n_slow``
rectangles at the given pixel ``offsets`` (``(fast_offset, slow_offset)`` of each module's first pixel,
row-major: slow row by slow row, fast column by fast column within a row).  The pixels between the
modules (the gaps) belong to no module: placed as a detector of panels
(:func:`preset_panels`), a preset simulates the modules alone.

:func:`preset_panels` places the modules in the plane of a flat detector, nanoBragg's single detector of
the full frame (its ``fdet``, ``sdet`` and ``pix0_m``, e.g. the C program's geometry of ``-detpixels_x
n_fast_total -detpixels_y n_slow_total -pixel pixel_mm``): module ``k``'s first pixel corner is
``pix0_m + fast_offset * pixel_m * fdet + slow_offset * pixel_m * sdet``, so every module pixel lies
exactly where the same pixel of the full frame lies.

Module names: ``m{row:02d}{col:02d}``, ``row`` counting modules along slow and ``col`` along fast from
the frame's first pixel (``m0000`` holds pixel ``(0, 0)``; the Pilatus 6M's last module is ``m1104``).
They name positions in the frame, not the vendor's module numbers or readout order.

Where the numbers come from (facts, checked against each other in ``tests/test_presets.py``):

* DECTRIS PILATUS / EIGER / EIGER2 module sizes and inter-module gaps (in pixels): dxtbx (cctbx/dxtbx,
  ``src/dxtbx/format/FormatPilatusHelpers.py``: its detector database gives Pilatus modules of
  487 x 195 pixels with gaps of 7 (fast) and 17 (slow) pixels; EIGER X 1030 x 514, gaps 10 and 37;
  EIGER2 X 1028 x 512, gaps 12 and 38; the Pilatus 6M mask there lists the gap columns 488-494,
  982-988... and rows 196-212, 408-424..., 1-based).  The full frames are in the same file's vendor-type
  tables: Pilatus 6M 2463 x 2527, 2M 1475 x 1679; Eiger 16M 4150 x 4371, 4M 2070 x 2167; Eiger2 16M
  4148 x 4362, 9M 3108 x 3262, 4M 2068 x 2162, 1M 1028 x 1062.  They agree: e.g. 5 x 487 + 4 x 7 = 2463
  and 12 x 195 + 11 x 17 = 2527; 4 x 1028 + 3 x 12 = 4148 and 8 x 512 + 7 x 38 = 4362.
* Pixel sizes: PILATUS 172 um (DECTRIS's PILATUS3 6M figures, 2463 x 2527 pixels of 172 x 172 um^2
  over 423.6 x 434.6 mm^2, as CHESS QM2's detector notes quote them: github.com/suchismitasarker/
  CHESS-ID4B-QM2, docs/detector_information.md); EIGER 75 um (DECTRIS news "Electrons are the new
  photons": "EIGER detectors feature a pixel size of 75 um"); EIGER2 75 um (a CrystFEL geometry of an
  EIGER2 16M, github.com/nzatsepin/maskmaker example/eiger16M.geom: 4148 x 4362 pixels, res = 13333.3
  pixels per metre); JUNGFRAU 75 um (European XFEL's JUNGFRAU documentation,
  rtd.xfel.eu/docs/jungfrau-detector-documentation, "General Introduction": "pixel pitch is of 75 um").
* JUNGFRAU 4M (PSI): 8 modules, each 2 x 4 chips of 256 x 256 pixels of 75 um, 1024 x 512 raw pixels
  (European XFEL's JUNGFRAU documentation); the pixels on the chip borders are twice as large, and the
  assembled ("converted") module splits them, 1030 x 514 pixels of 75 um (PSI's Jungfraujoch,
  ``common/Definitions.h``: CONVERTED_MODULE_COLS 1030, CONVERTED_MODULE_LINES 514, and
  ``common/RawToConvertedGeometry.h``; read in the fork github.com/graeme-winter/jungfraujoch-fork,
  2023).  The assembled 4M: Jungfraujoch stacks the modules 2 across and 4 down with gaps of 8 pixels
  (fast) and 36 pixels (slow) (``common/DiffractionExperiment.cpp`` CalculateGeometry: width 2 x 1030 +
  gap_x, height 4 x 514 + 3 gap_y; its tests build the JF4M as ``(2, {8}, 8, 36)`` and recognise "JF4M
  with gaps (2068 x 2164)").  ASSUMPTION: those nominal gaps are the layout here; a real JUNGFRAU 4M
  installation has its own measured module positions (and Jungfraujoch numbers its modules from the
  bottom of the image, mirrored in y; the names here count from the frame's first pixel).
* Sensors (informational, not applied): PILATUS 320 um Si (the PILATUS user manual, V1.2, section 4.2:
  "0.32 mm thick silicon sensor"; 450 and 1000 um are options); JUNGFRAU 320 um Si (Jungfraujoch's
  SENSOR_THICKNESS_IN_UM 320; European XFEL: "typically 320 um thick Si, but 450 um is also available");
  EIGER / EIGER2 450 um Si: ASSUMPTION, DECTRIS's usual silicon option, not found in the sources read
  (CdTe 750 um builds exist).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bragg_dask.errors import ConfigError
from bragg_dask.io.panels import Panel, _Where, panels_of


@dataclass(frozen=True)
class Preset:
    """One modular detector: identical ``n_fast x n_slow`` modules of ``pixel_m`` (m) at ``offsets``
    (pixels, ``(fast, slow)`` of each module's first pixel in the full frame, row-major) in a full frame
    of ``n_fast_total x n_slow_total`` pixels; the sensor (informational: the presets do not set the C
    program's ``-detector_thick``)."""

    name: str
    description: str
    pixel_m: float
    n_fast: int
    n_slow: int
    offsets: tuple[tuple[int, int], ...]
    n_fast_total: int
    n_slow_total: int
    sensor_material: str = "Si"
    sensor_thickness_m: float | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """The layout is consistent: at least one module, each inside the frame, none overlapping, the
        first at pixel (0, 0) and the last reaching the frame's far edges (the frame is the modules'
        bounding box, as the vendors write it)."""
        if not self.offsets:
            raise ValueError(f"preset {self.name}: no modules")
        for fo, so in self.offsets:
            if not (
                0 <= fo and fo + self.n_fast <= self.n_fast_total and 0 <= so and so + self.n_slow <= self.n_slow_total
            ):
                raise ValueError(f"preset {self.name}: a module at ({fo}, {so}) leaves the frame")
        for i, (fa, sa) in enumerate(self.offsets):
            for fb, sb in self.offsets[i + 1 :]:
                if abs(fa - fb) < self.n_fast and abs(sa - sb) < self.n_slow:
                    raise ValueError(f"preset {self.name}: modules at ({fa}, {sa}) and ({fb}, {sb}) overlap")
        fs = [fo for fo, _ in self.offsets]
        ss = [so for _, so in self.offsets]
        if min(fs) != 0 or min(ss) != 0:
            raise ValueError(f"preset {self.name}: no module at the frame's first pixel")
        if max(fs) + self.n_fast != self.n_fast_total or max(ss) + self.n_slow != self.n_slow_total:
            raise ValueError(f"preset {self.name}: the modules do not reach the frame's far edges")

    @property
    def n_modules(self) -> int:
        return len(self.offsets)

    @property
    def grid(self) -> tuple[int, int]:
        """(columns along fast, rows along slow) of the module grid."""
        return len({fo for fo, _ in self.offsets}), len({so for _, so in self.offsets})

    def module_names(self) -> tuple[str, ...]:
        """``m{row:02d}{col:02d}`` per module, in the order of :attr:`offsets`."""
        cols = sorted({fo for fo, _ in self.offsets})
        rows = sorted({so for _, so in self.offsets})
        return tuple(f"m{rows.index(so):02d}{cols.index(fo):02d}" for fo, so in self.offsets)


def _grid(cols: int, rows: int, n_fast: int, n_slow: int, gap_fast: int, gap_slow: int) -> dict:
    """The fields of a regular grid: ``cols x rows`` modules, ``gap_*`` pixels between them."""
    offsets = tuple((c * (n_fast + gap_fast), r * (n_slow + gap_slow)) for r in range(rows) for c in range(cols))
    return {
        "n_fast": n_fast,
        "n_slow": n_slow,
        "offsets": offsets,
        "n_fast_total": cols * n_fast + (cols - 1) * gap_fast,
        "n_slow_total": rows * n_slow + (rows - 1) * gap_slow,
    }


# DECTRIS module shapes and gaps (pixels): dxtbx FormatPilatusHelpers' detector database (module docstring)
_PILATUS = {"n_fast": 487, "n_slow": 195, "gap_fast": 7, "gap_slow": 17}
_EIGER = {"n_fast": 1030, "n_slow": 514, "gap_fast": 10, "gap_slow": 37}
_EIGER2 = {"n_fast": 1028, "n_slow": 512, "gap_fast": 12, "gap_slow": 38}
# JUNGFRAU: the assembled module and the 4M's nominal gaps of PSI's Jungfraujoch (module docstring)
_JUNGFRAU = {"n_fast": 1030, "n_slow": 514, "gap_fast": 8, "gap_slow": 36}


def _preset(name: str, description: str, grid: tuple[int, int], module: dict, aliases: tuple[str, ...]) -> Preset:
    """A preset of ``grid`` (columns, rows) modules of ``module``'s shape and gaps (pixel and sensor: its
    maker's: 172 um and 320 um of silicon for a PILATUS, 75 um and 450 um for an EIGER, 75 um and 320 um
    for a JUNGFRAU)."""
    pixel, thickness = {"pilatus": (172e-6, 320e-6), "eiger": (75e-6, 450e-6), "jungfrau": (75e-6, 320e-6)}[
        next(k for k in ("pilatus", "eiger", "jungfrau") if name.startswith(k))
    ]
    return Preset(name=name, description=description, pixel_m=pixel, sensor_thickness_m=thickness,
                  aliases=aliases, **_grid(*grid, **module))  # fmt: skip


_PRESETS = (
    _preset("pilatus6m", "DECTRIS PILATUS 6M", (5, 12), _PILATUS, ("pilatus-6m", "pilatus3-6m", "p6m")),
    _preset("pilatus2m", "DECTRIS PILATUS 2M", (3, 8), _PILATUS, ("pilatus-2m", "pilatus3-2m", "p2m")),
    _preset("eiger2-16m", "DECTRIS EIGER2 X 16M", (4, 8), _EIGER2, ("eiger2-x-16m", "e2-16m")),
    _preset("eiger2-9m", "DECTRIS EIGER2 X 9M", (3, 6), _EIGER2, ("eiger2-x-9m", "e2-9m")),
    _preset("eiger2-4m", "DECTRIS EIGER2 X 4M", (2, 4), _EIGER2, ("eiger2-x-4m", "e2-4m")),
    _preset("eiger2-1m", "DECTRIS EIGER2 X 1M", (1, 2), _EIGER2, ("eiger2-x-1m", "e2-1m")),
    _preset("eiger-16m", "DECTRIS EIGER X 16M (first generation)", (4, 8), _EIGER, ("eiger-x-16m", "eiger1-16m")),
    _preset("eiger-4m", "DECTRIS EIGER X 4M (first generation)", (2, 4), _EIGER, ("eiger-x-4m", "eiger1-4m")),
    _preset(
        "jungfrau4m",
        "PSI JUNGFRAU 4M (assembled modules, Jungfraujoch's nominal gaps)",
        (2, 4),
        _JUNGFRAU,
        ("jungfrau-4m", "jf4m", "jf-4m"),
    ),
)

#: the presets by name
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


def _key(name: str) -> str:
    """A name as looked up: lower case, letters and digits only (``EIGER2_16M``, ``Eiger2 16M`` ->
    ``eiger216m``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP: dict[str, str] = {}
for _p in _PRESETS:
    for _n in (_p.name, *_p.aliases):
        if _LOOKUP.setdefault(_key(_n), _p.name) != _p.name:
            raise ValueError(f"preset name {_n!r} names two presets")


def preset(name: str, flag: str = "--detector") -> Preset:
    """The preset ``name`` names: its name or an alias, in any case, with or without ``-``, ``_``,
    spaces (``Pilatus6M``, ``EIGER2_16M``, ``jf4m``); an unknown name is a :class:`ConfigError` naming
    ``flag`` and listing the known names."""
    found = _LOOKUP.get(_key(name))
    if found is None:
        raise ConfigError(
            f"unknown detector {name!r}; the known ones: {', '.join(PRESETS)} ('{flag} list' describes them)",
            flag=flag,
        )
    return PRESETS[found]


def preset_list() -> str:
    """The text ``--detector list`` prints: one line per preset, its name, modules (count, grid), module
    size, pixel size, full frame size and gaps, then its description."""
    width = max(len(p.name) for p in _PRESETS)
    lines = []
    for p in _PRESETS:
        cols, rows = p.grid
        fs = sorted({fo for fo, _ in p.offsets})
        ss = sorted({so for _, so in p.offsets})
        gap_f = str(fs[1] - fs[0] - p.n_fast) if len(fs) > 1 else "-"
        gap_s = str(ss[1] - ss[0] - p.n_slow) if len(ss) > 1 else "-"
        lines.append(
            f"{p.name:<{width}}  {p.n_modules:>2} modules ({cols} x {rows}) of {p.n_fast} x {p.n_slow} pixels "
            f"of {p.pixel_m * 1e6:g} um, frame {p.n_fast_total} x {p.n_slow_total} "
            f"(gaps {gap_f} x {gap_s} pixels)  {p.description}"
        )
    return "\n".join(lines)


def preset_doc(p: Preset, geometry) -> dict:
    """The native description (``--panels`` JSON, :mod:`bragg_dask.io.panels`) of ``p``'s modules
    placed as :func:`preset_panels` places them."""
    f, s, p0 = geometry.fdet, geometry.sdet, geometry.pix0_m
    px = p.pixel_m
    items = []
    for name, (fo, so) in zip(p.module_names(), p.offsets):
        pix0 = [float(p0[i] + fo * px * f[i] + so * px * s[i]) for i in range(3)]
        items.append(
            {
                "name": name,
                "fdet": [float(x) for x in f],
                "sdet": [float(x) for x in s],
                "pix0_m": pix0,
                "pixel_m": px,
                "n_fast": p.n_fast,
                "n_slow": p.n_slow,
            }
        )
    return {"panels": items}


def preset_panels(p: Preset, geometry, flag: str = "--detector") -> tuple[Panel, ...]:
    """``p``'s modules in the plane of the flat detector ``geometry`` (a
    :class:`~bragg_dask.physics.geometry.DetectorGeometry`: its unit ``fdet``, ``sdet`` and ``pix0_m``,
    the full frame's first pixel corner, metres): module ``k`` at ``pix0_m + fo_k * pixel_m * fdet +
    so_k * pixel_m * sdet``, named ``m{row:02d}{col:02d}``.  The panels pass the native checks of
    :func:`~bragg_dask.io.panels.panels_of` (a plane through the sample or facing away from it is a
    :class:`ConfigError` naming ``flag``)."""
    return panels_of(preset_doc(p, geometry), _Where(f"detector {p.name}", flag))


def preset_frame(p: Preset) -> tuple:
    """The modules' places in the preset's frame, as ``Detector.panel_frame`` holds them:
    ``(slow_pixels, fast_pixels, ((slow, fast) of each module's first pixel, ...))``."""
    return (p.n_slow_total, p.n_fast_total, tuple((so, fo) for fo, so in p.offsets))
