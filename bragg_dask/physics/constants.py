"""Constants shared across the package, each defined once (the C program's values; the project's
nanoBragg specification gives their C line references).

Physics modules import them from here; the rest of the package too (``physics`` imports nothing from
outside itself, so this module lives inside it).
"""

from __future__ import annotations

import math

#: degrees per radian (the C program's ``RTD``)
RTD = 180.0 / math.pi
#: classical electron radius squared, m^2 (nanoBragg's ``r_e_sqr``)
R_E_SQR = 7.94079248018965e-30
#: fluence, photons/m^2, for which ``r_e^2 * fluence == 1`` (the C program's default)
DEFAULT_FLUENCE = 125932015286227086360700780544.0
#: hc in eV * Angstrom, as the C program writes it for ``-energy``
HC_EV_ANGSTROM = 12398.42
#: the water background (``-water``): Avogadro's number, water's F and its molar mass (g/mol), as
#: the C program writes them
AVOGADRO = 6.02214179e23
WATER_F = 2.57
WATER_MW = 18.0
#: the offset added to every integer pixel, ADU (``-adc``'s default)
DEFAULT_ADC_OFFSET = 40.0
#: the largest C ``int``: counts (-N, pixels, steps) and Miller indices the C program holds in one
C_INT_MAX = 2**31 - 1
