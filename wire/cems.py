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

Two inputs a unit does not always measure have their own formulas here:

- barometric pressure at a site of known altitude, from the standard atmosphere (ICAO/ISO 2533
  troposphere, as the simulator uses too):
  ``B_a = 101325 × (1 − 2.25577 × 10⁻⁵ × h)^5.25588`` Pa, h in metres (Baotou ~1,050 m:
  ~89,300 Pa; Ordos ~1,450 m: ~85,100 Pa, 12–16 % below sea level);
- an analyser that measures CO2 on a wet basis (extractive hot-wet or in-situ): HJ 75 reports
  on a dry basis, ``C_dry = C_wet / (1 − X_sw)`` with the measured moisture X_sw.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "CO2_MG_M3_PER_PPM",
    "P0_PA",
    "T0_K",
    "co2_dry_from_wet_pct",
    "co2_mass_rate_t_h",
    "dry_standard_flow_m3_h",
    "pressure_at_altitude_pa",
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


# Standard atmosphere (troposphere): lapse-rate exponent and scale of the barometric formula.
_ISA_K_PER_M = 2.25577e-5
_ISA_EXPONENT = 5.25588


def pressure_at_altitude_pa(altitude_m: F64 | float) -> F64:
    """Standard-atmosphere barometric pressure at an altitude, Pa.

    ``B_a = 101325 × (1 − 2.25577 × 10⁻⁵ × h)^5.25588`` (valid in the troposphere, h < 11 km).

    Args:
        altitude_m: site altitude above sea level, m.

    Returns:
        The pressure, Pa.
    """
    h = np.asarray(altitude_m, np.float64)
    return np.asarray(P0_PA * (1.0 - _ISA_K_PER_M * h) ** _ISA_EXPONENT, np.float64)


def co2_dry_from_wet_pct(co2_wet_pct_vol: F64, moisture_pct: F64) -> F64:
    """CO2 on a dry basis from a wet-basis reading and the flue-gas moisture.

    Args:
        co2_wet_pct_vol: CO2 measured in the wet flue gas, % vol.
        moisture_pct: flue-gas moisture X_sw, % vol.

    Returns:
        ``C_wet / (1 − X_sw)``, % vol dry (NaN where the moisture is 100 % or more).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        dry_frac = 1.0 - np.asarray(moisture_pct, np.float64) / 100.0
        return np.asarray(np.where(dry_frac > 0, co2_wet_pct_vol / dry_frac, np.nan), np.float64)
