"""Vectorised signal models: the values a whole fleet reads at given times, one numpy block.

Each kind's model combines deterministic cycles computed from the reading time (diurnal
boundary-layer cycle, seasons, the daily dispatch curve of a coal unit, mining shifts),
per-device red noise (AR(1) processes whose memory depends on the time since the device's last
reading) and white instrument noise. Nothing here does I/O or reads the clock: callers pass
reading times as epoch seconds, so the same code serves the live simulator and offline
scenario builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sensors_sim.arrays import BoolArray, FloatArray, IntArray
from sensors_sim.profiles import Fleet, pressure_at_altitude_hpa
from wire import co2_mass_rate_t_h, dry_standard_flow_m3_h
from wire.schemas import SourceKind

__all__ = [
    "COAL_CO2_T_PER_TCE",
    "Sample",
    "SignalModel",
    "local_hour",
]


LOCAL_UTC_OFFSET_H = 8.0  # China Standard Time: cycles follow local solar and working hours
DAY_S = 86_400.0
YEAR_S = 365.2425 * DAY_S
_TWO_PI = 2.0 * np.pi
# Tonnes of CO2 per tonne of standard coal equivalent burnt (Chinese default for coal, ~2.66).
COAL_CO2_T_PER_TCE = 2.66
_KG_PER_T = 1000.0
# Red-noise memory per state channel (seconds), per kind.
_TAUS_S: dict[SourceKind, tuple[float, ...]] = {
    # co2, ch4, wind speed, wind dir, temperature, pressure, humidity
    SourceKind.CITY: (600.0, 600.0, 300.0, 900.0, 1800.0, 21_600.0, 1800.0),
    # load, co2, flow, flue temp, static/baro pressure, moisture
    SourceKind.CEMS: (900.0, 300.0, 120.0, 600.0, 300.0, 600.0),
    SourceKind.MINE: (120.0,),
    # ch4, wind speed, wind dir, temperature
    SourceKind.LEAK: (60.0, 300.0, 900.0, 1800.0),
}


def local_hour(t_s: FloatArray) -> FloatArray:
    """Local (UTC+8) hour of day, fractional, for epoch seconds."""
    return ((t_s / 3600.0) + LOCAL_UTC_OFFSET_H) % 24.0


def _day_of_year(t_s: FloatArray) -> FloatArray:
    return ((t_s + LOCAL_UTC_OFFSET_H * 3600.0) % YEAR_S) / DAY_S


def _year(t_s: FloatArray) -> FloatArray:
    return 1970.0 + t_s / YEAR_S


def _cycle(x: FloatArray, peak: float, period: float) -> FloatArray:
    """A cosine of ``period`` that peaks at ``peak``."""
    return np.cos(_TWO_PI * (x - peak) / period)


@dataclass(frozen=True, slots=True)
class Sample:
    """Values read by some devices of a fleet at one time each.

    Attributes:
        values: shape (devices, channels), in the fleet's channel order and units.
        calibrating: per device, True while it reads calibration gas (flag C).
    """

    values: FloatArray
    calibrating: BoolArray


_Model = Callable[[Fleet, IntArray, FloatArray, FloatArray, FloatArray, np.random.Generator], None]


class SignalModel:
    """Generate a fleet's readings block by block, carrying each device's red-noise state.

    Args:
        fleet: the devices.
        rng: the seeded generator for noise.
    """

    def __init__(self, fleet: Fleet, rng: np.random.Generator) -> None:
        self._fleet = fleet
        self._rng = rng
        self._taus = np.array(_TAUS_S[fleet.kind])
        # Start from the stationary distribution so the first readings already look settled.
        self._state = rng.standard_normal((fleet.size, len(self._taus)))
        self._last_t = np.full(fleet.size, np.nan)
        self._model: _Model = _MODELS[fleet.kind]

    @property
    def fleet(self) -> Fleet:
        """The fleet this model generates for."""
        return self._fleet

    def sample(self, idx: IntArray, t_s: FloatArray) -> Sample:
        """Read devices ``idx`` at times ``t_s`` (epoch seconds, one per device).

        Args:
            idx: device indices into the fleet (each at most once).
            t_s: reading time per device.

        Returns:
            The values and calibration state of those devices.
        """
        dt = np.nan_to_num(t_s - self._last_t[idx], nan=0.0).clip(0.0, DAY_S)
        decay = np.exp(-dt[:, None] / self._taus[None, :])
        shock = self._rng.standard_normal((len(idx), len(self._taus)))
        red = self._state[idx] * decay + np.sqrt(1.0 - decay**2) * shock
        self._state[idx] = red
        self._last_t[idx] = t_s
        values = np.empty((len(idx), len(self._fleet.channels)))
        fleet = self._fleet
        cal = np.zeros(len(idx), dtype=np.bool_)
        if fleet.calibration_period_s > 0:
            phase = fleet.params["calibration_phase_s"][idx]
            cal = (t_s + phase) % fleet.calibration_period_s < fleet.calibration_duration_s
        self._model(fleet, idx, t_s, red, values, self._rng)
        if cal.any():
            _calibration_values(fleet, idx, t_s, cal, values, self._rng)
        return Sample(values=values, calibrating=cal)


def _city(
    fleet: Fleet,
    idx: IntArray,
    t: FloatArray,
    red: FloatArray,
    out: FloatArray,
    rng: np.random.Generator,
) -> None:
    p = {k: v[idx] for k, v in fleet.params.items()}
    n = len(idx)
    h, doy, year = local_hour(t), _day_of_year(t), _year(t)
    # Background: ~423 ppm in 2025, +2.4 ppm/yr, northern-hemisphere cycle peaking in late April.
    co2_bg = 423.0 + 2.4 * (year - 2025.0) + 4.5 * _cycle(doy, 115.0, 365.25)
    ch4_bg = 1.935 + 0.01 * (year - 2025.0) + 0.01 * _cycle(doy, 330.0, 365.25)
    # Shallow night-time boundary layer traps emissions (high before dawn, low mid-afternoon);
    # coal heating from October to April adds to the winter enhancement.
    boundary = 1.0 + 0.7 * _cycle(h, 4.0, 24.0)
    heating = 1.3 + 0.3 * _cycle(doy, 15.0, 365.25)
    plume = np.clip(1.0 + 0.25 * red[:, 0], 0.2, None)
    out[:, 0] = (
        co2_bg
        + p["co2_enh_ppm"] * boundary * heating * plume
        + rng.normal(0.0, 1.0, n) * p["co2_noise_ppm"]
    )
    out[:, 1] = (
        ch4_bg
        + p["ch4_enh_ppm"] * boundary * np.clip(1.0 + 0.3 * red[:, 1], 0.1, None)
        + rng.normal(0.0, 1.0, n) * p["ch4_noise_ppm"]
    )
    _weather(out, 2, p, h, doy, red[:, 2:], rng)
    surface = pressure_at_altitude_hpa(p["altitude_m"])
    out[:, 5] = surface + 4.0 * _cycle(doy, 15.0, 365.25) + 6.0 * red[:, 5]
    out[:, 6] = np.clip(
        45.0 + 12.0 * _cycle(doy, 210.0, 365.25) + 15.0 * _cycle(h, 4.0, 24.0) + 6.0 * red[:, 6],
        3.0,
        100.0,
    )


def _weather(
    out: FloatArray,
    col: int,
    p: dict[str, FloatArray],
    h: FloatArray,
    doy: FloatArray,
    red: FloatArray,
    rng: np.random.Generator,
) -> None:
    """Wind speed, wind direction and air temperature into columns col..col+2."""
    n = len(h)
    # Afternoon mixing brings stronger wind; speeds are log-normal around the site mean.
    out[:, col] = np.clip(
        p["wind_mean_m_s"] * (1.0 + 0.35 * _cycle(h, 15.0, 24.0)) * np.exp(0.35 * red[:, 0] - 0.06),
        0.0,
        60.0,
    )
    out[:, col + 1] = (p["wind_dir_mean_deg"] + 40.0 * red[:, 1] + rng.normal(0, 8.0, n)) % 360.0
    # Baotou: about 7.5 °C mean, -12 °C in January, +23 °C in July; 6 K lower per 1000 m.
    out[:, col + 2] = (
        7.5
        - 17.5 * _cycle(doy, 20.0, 365.25)
        + 6.0 * _cycle(h, 15.0, 24.0)
        + 2.0 * red[:, 2]
        - 0.0065 * (p["altitude_m"] - 1000.0)
    )


def _cems(
    fleet: Fleet,
    idx: IntArray,
    t: FloatArray,
    red: FloatArray,
    out: FloatArray,
    rng: np.random.Generator,
) -> None:
    p = {k: v[idx] for k, v in fleet.params.items()}
    n = len(idx)
    h = local_hour(t) + p["dispatch_phase_h"]
    # Daily dispatch: evening peak, morning shoulder, a midday dip when the region's solar and
    # wind output is high, the night trough.
    shape = np.clip(
        0.55 + 0.30 * _cycle(h, 19.5, 24.0) + 0.15 * _cycle(h, 9.0, 12.0) + 0.04 * red[:, 0],
        0.0,
        1.0,
    )
    lo = p["min_load_frac"]
    frac = lo + (1.0 - lo) * shape
    load = p["capacity_mw"] * frac
    # Less excess air at high load: CO2 rises with load, O2 falls (coal CO2max ~18.7 % dry).
    co2 = np.clip(10.0 + 3.5 * (frac - 0.4) / 0.6 + 0.15 * red[:, 1], 8.0, 15.0)
    co2 = co2 + rng.normal(0.0, 0.03, n)
    o2 = np.clip(20.9 * (1.0 - co2 / 18.7) + rng.normal(0.0, 0.05, n), 0.5, 20.9)
    temp = p["flue_temp_base_c"] + 4.0 * (frac - 0.7) + 1.0 * red[:, 3]
    static = p["static_base_pa"] + 150.0 * (frac - 0.7) + 30.0 * red[:, 4]
    baro = pressure_at_altitude_hpa(p["altitude_m"]) * 100.0 + 300.0 * red[:, 4]
    moisture = np.clip(p["moisture_base_pct"] + 0.8 * (frac - 0.7) + 0.3 * red[:, 5], 1.0, 30.0)
    # Flow follows from the unit's emission intensity so that the CEMS arithmetic of HJ 75
    # (dry, standard conditions) gives back a plausible g CO2/kWh near its class benchmark;
    # heat rate worsens at part load. The formula is the engine's own (wire.cems), inverted:
    # both its steps are linear in the flow, so a unit flow gives the factor to divide by.
    intensity_g_kwh = (
        p["coal_g_kwh"] * p["performance"] * (1.0 + 0.10 * (1.0 - frac)) * COAL_CO2_T_PER_TCE
    )
    mass_t_h = intensity_g_kwh * load / _KG_PER_T  # g/kWh x MW = kg/h
    ones = np.ones(n)
    dry_std_m3_h = mass_t_h / co2_mass_rate_t_h(co2, ones)
    to_std = dry_standard_flow_m3_h(ones, temp, baro, static, moisture)
    flow = dry_std_m3_h / to_std * (1.0 + 0.015 * red[:, 2])
    out[:, 0] = load + rng.normal(0.0, 0.002, n) * p["capacity_mw"]
    out[:, 1] = co2
    out[:, 2] = o2
    out[:, 3] = flow
    out[:, 4] = temp
    out[:, 5] = static
    out[:, 6] = baro
    out[:, 7] = moisture


def _mine(
    fleet: Fleet,
    idx: IntArray,
    t: FloatArray,
    red: FloatArray,
    out: FloatArray,
    rng: np.random.Generator,
) -> None:
    p = {k: v[idx] for k, v in fleet.params.items()}
    n = len(idx)
    # Two production shifts and one maintenance shift a day; the shearer's passes along the
    # face (~40 min) modulate the gas released during production.
    shift_h = (local_hour(t) + p["shift_phase_h"]) % 24.0
    producing = shift_h < 16.0
    passes = 1.0 + 0.10 * np.sin(_TWO_PI * (t / 2400.0 + p["shift_phase_h"]))
    factor = np.where(producing, passes, 0.8)
    value = p["baseline_pct"] * factor * (1.0 + 0.08 * red[:, 0])
    out[:, 0] = np.clip(value + rng.normal(0.0, 1.0, n) * p["noise_pct"], 0.0, None)


def _leak(
    fleet: Fleet,
    idx: IntArray,
    t: FloatArray,
    red: FloatArray,
    out: FloatArray,
    rng: np.random.Generator,
) -> None:
    p = {k: v[idx] for k, v in fleet.params.items()}
    n = len(idx)
    h, doy = local_hour(t), _day_of_year(t)
    _weather(out, 1, p, h, doy, red[:, 1:], rng)
    # Calm nights let the site's small permitted emissions accumulate a few tens of ppb.
    calm = np.exp(-out[:, 1] / 1.5)
    out[:, 0] = (
        p["background_ppm"]
        + 0.02 * _cycle(h, 4.0, 24.0)
        + 0.15 * calm * np.clip(1.0 + 0.5 * red[:, 0], 0.0, None)
        + rng.normal(0.0, 1.0, n) * p["noise_ppm"]
    )


def _calibration_values(
    fleet: Fleet,
    idx: IntArray,
    t: FloatArray,
    cal: BoolArray,
    out: FloatArray,
    rng: np.random.Generator,
) -> None:
    """During a calibration run the gas channels read reference gas, not air."""
    rows = np.flatnonzero(cal)
    k = len(rows)
    p = {name: v[idx[rows]] for name, v in fleet.params.items()}
    if fleet.kind is SourceKind.CITY:
        out[rows, 0] = p["co2_ref_ppm"] + rng.normal(0.0, 0.05, k)
        out[rows, 1] = p["ch4_ref_ppm"] + rng.normal(0.0, 0.0005, k)
    elif fleet.kind is SourceKind.CEMS:
        # First half zero gas (N2), second half span: 15 % CO2 and instrument air for O2.
        elapsed = (t[rows] + p["calibration_phase_s"]) % fleet.calibration_period_s
        span = elapsed >= fleet.calibration_duration_s / 2.0
        out[rows, 1] = np.where(span, 15.0, 0.0) + rng.normal(0.0, 0.02, k)
        out[rows, 2] = np.where(span, 20.9, 0.0) + rng.normal(0.0, 0.02, k)
        out[rows, 1:3] = np.abs(out[rows, 1:3])
    elif fleet.kind is SourceKind.MINE:
        out[rows, 0] = p["cal_gas_pct"] + rng.normal(0.0, 0.01, k)


_MODELS: dict[SourceKind, _Model] = {
    SourceKind.CITY: _city,
    SourceKind.CEMS: _cems,
    SourceKind.MINE: _mine,
    SourceKind.LEAK: _leak,
}
