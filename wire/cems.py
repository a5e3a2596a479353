"""What a CEMS unit's channels mean together: the HJ 75 dry standard flow and CO2 mass rate.

A unit sends flue-gas CO2 (``co2_pct_vol``, measured dry), flow at actual wet conditions
(``flow_m3_h``), flue temperature, static and barometric pressure and moisture. HJ 75 turns
them into the flow at dry standard conditions (273.15 K, 101.325 kPa) and the CO2 mass
emission rate:

    Q_sn = Q_s × 273.15 / (273.15 + t_s) × (B_a + P_s) / 101325 × (1 − X_sw)
    G (t/h) = C_CO2 (% vol) × 10⁴ ppm × 44.01 / 22.414 mg/m³ per ppm × Q_sn × 10⁻⁹

The one copy of the formula: the detection engine computes emissions with it and the
simulator derives the flow a unit of given intensity must report from it. Both functions are
linear in the flow, so the simulator inverts them by passing a unit flow.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "CO2_MG_M3_PER_PPM",
    "P0_PA",
    "T0_K",
    "co2_mass_rate_t_h",
    "dry_standard_flow_m3_h",
]

F64 = npt.NDArray[np.float64]

# Standard conditions of HJ 75.
T0_K = 273.15
P0_PA = 101_325.0
# mg/m³ of CO2 per ppm at standard conditions: molar mass over molar volume, 44.01 / 22.414.
CO2_MG_M3_PER_PPM = 44.01 / 22.414
_PPM_PER_PCT = 10_000.0
_T_PER_MG = 1e-9


def dry_standard_flow_m3_h(
    flow_m3_h: F64, flue_temp_c: F64, baro_pa: F64, static_pa: F64, moisture_pct: F64
) -> F64:
    """Flue-gas flow at dry standard conditions (273.15 K, 101.325 kPa), HJ 75 formula.

    Args:
        flow_m3_h: flow at actual (wet) flue conditions, m³/h.
        flue_temp_c: flue-gas temperature, °C.
        baro_pa: barometric pressure, Pa.
        static_pa: static pressure in the flue (negative under draught), Pa.
        moisture_pct: flue-gas moisture, % vol.

    Returns:
        The dry standard flow Q_sn, m³/h.
    """
    return np.asarray(
        flow_m3_h
        * T0_K
        / (T0_K + flue_temp_c)
        * (baro_pa + static_pa)
        / P0_PA
        * (1.0 - moisture_pct / 100.0),
        np.float64,
    )


def co2_mass_rate_t_h(co2_pct_vol: F64, q_sn_m3_h: F64) -> F64:
    """CO2 mass emission rate in t/h from a dry CO2 % vol and a dry standard flow.

    Args:
        co2_pct_vol: flue-gas CO2 on a dry basis, % vol.
        q_sn_m3_h: dry standard flow, m³/h (:func:`dry_standard_flow_m3_h`).

    Returns:
        The mass rate G, t/h.
    """
    mg_m3 = co2_pct_vol * _PPM_PER_PCT * CO2_MG_M3_PER_PPM
    return np.asarray(mg_m3 * q_sn_m3_h * _T_PER_MG, np.float64)
