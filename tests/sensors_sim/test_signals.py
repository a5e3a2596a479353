"""Simulated values are physically plausible for each kind and follow their cycles."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from sensors_sim import Fleet, SignalModel, build_fleet
from sensors_sim.signals import COAL_CO2_T_PER_TCE
from wire import CO2_MG_M3_PER_PPM
from wire.schemas import MineLocation, SourceKind

# 2026-01-15 00:00 local (UTC+8) and the same day at other hours.
_DAY0 = datetime(2026, 1, 14, 16, 0, tzinfo=UTC).timestamp()


def _series(kind: SourceKind, n: int, hours: np.ndarray) -> tuple[Fleet, np.ndarray, np.ndarray]:
    """Values of n devices at each hour offset: shape (hours, devices, channels)."""
    fleet = build_fleet(kind, n, np.random.default_rng(11))
    model = SignalModel(fleet, np.random.default_rng(12))
    idx = np.arange(n)
    vals, cal = [], []
    for h in hours:
        sample = model.sample(idx, np.full(n, _DAY0 + h * 3600.0))
        vals.append(sample.values)
        cal.append(sample.calibrating)
    return fleet, np.array(vals), np.array(cal)


def test_city_values_are_plausible_with_a_night_time_high() -> None:
    """City CO2 sits above a ~425 ppm background, higher before dawn than mid-afternoon."""
    hours = np.arange(0.0, 72.0, 0.25)
    fleet, vals, cal = _series(SourceKind.CITY, 40, hours)
    ok = ~cal
    col = {c: i for i, c in enumerate(fleet.channels)}
    co2 = vals[..., col["co2_ppm"]]
    assert co2[ok].min() > 415.0
    assert co2[ok].max() < 650.0
    ch4 = vals[..., col["ch4_ppm"]]
    assert ch4[ok].min() > 1.9
    assert ch4[ok].max() < 3.5
    local = hours % 24.0  # _DAY0 is local midnight
    dawn, afternoon = (local >= 3) & (local < 6), (local >= 14) & (local < 17)
    assert np.median(co2[dawn][ok[dawn]]) > np.median(co2[afternoon][ok[afternoon]]) + 5.0
    wind_dir = vals[..., col["wind_dir_deg"]]
    assert wind_dir.min() >= 0.0
    assert wind_dir.max() < 360.0
    assert (vals[..., col["wind_speed_m_s"]] >= 0).all()
    temp = vals[..., col["air_temp_c"]]
    assert temp.min() > -35.0
    assert temp.max() < 10.0
    pressure = vals[..., col["air_pressure_hpa"]]
    assert pressure.min() > 800.0
    assert pressure.max() < 930.0
    rh = vals[..., col["rel_humidity_pct"]]
    assert rh.min() >= 0.0
    assert rh.max() <= 100.0


def test_cems_emission_intensity_is_near_the_unit_class_benchmark() -> None:
    """HJ 75 arithmetic on simulated CEMS channels gives g CO2/kWh near the class benchmark."""
    hours = np.arange(0.0, 48.0, 0.5)
    fleet, vals, cal = _series(SourceKind.CEMS, 30, hours)
    col = {c: i for i, c in enumerate(fleet.channels)}
    ok = ~cal
    load = vals[..., col["load_mw"]]
    cap = fleet.params["capacity_mw"][None, :]
    assert (load > 0.35 * cap).all()
    assert (load < 1.02 * cap).all()
    co2 = vals[..., col["co2_pct_vol"]]
    assert co2[ok].min() >= 8.0
    assert co2[ok].max() <= 15.2
    # Higher load, higher CO2 (less excess air): a positive correlation per unit.
    corr = [np.corrcoef(load[:, u], co2[:, u])[0, 1] for u in range(30)]
    assert np.median(corr) > 0.5
    t = vals[..., col["flue_temp_c"]]
    p = vals[..., col["baro_pressure_pa"]] + vals[..., col["static_pressure_pa"]]
    x = vals[..., col["moisture_pct_vol"]] / 100.0
    q_sn = vals[..., col["flow_m3_h"]] * 273.15 / (273.15 + t) * p / 101_325.0 * (1.0 - x)
    mass_kg_h = co2 * 10_000.0 * CO2_MG_M3_PER_PPM * q_sn * 1e-6
    intensity = mass_kg_h / load  # kg/MWh = g/kWh
    benchmark = fleet.params["coal_g_kwh"][None, :] * COAL_CO2_T_PER_TCE
    ratio = intensity[ok] / np.broadcast_to(benchmark, intensity.shape)[ok]
    assert ratio.min() > 0.9
    assert ratio.max() < 1.25


def test_mine_methane_stays_below_the_location_alarm_levels_in_normal_air() -> None:
    """Normal mine air reads location-appropriate CH4 below each class's alarm level."""
    hours = np.arange(0.0, 24.0, 0.05)
    fleet, vals, cal = _series(SourceKind.MINE, 300, hours)
    ch4 = vals[..., 0]
    assert ch4.min() >= 0.0
    alarm = {
        MineLocation.UPPER_CORNER: 1.0,
        MineLocation.WORKING_FACE: 1.0,
        MineLocation.FACE_RETURN: 1.0,
        MineLocation.INTAKE_HIGH_GAS: 0.5,
        MineLocation.DRAINAGE: 2.5,
        MineLocation.MAIN_RETURN: 0.75,
        MineLocation.WING_RETURN: 0.75,
        MineLocation.OTHER: 1.0,
    }
    for d, loc in enumerate(fleet.locations):
        assert loc is not None
        normal = ch4[:, d][~cal[:, d]]
        assert normal.max() < alarm[loc], (loc, normal.max())
    working = [d for d, loc in enumerate(fleet.locations) if loc is MineLocation.WORKING_FACE]
    drainage = [d for d, loc in enumerate(fleet.locations) if loc is MineLocation.DRAINAGE]
    assert np.median(ch4[:, drainage]) > np.median(ch4[:, working])


def test_leak_monitors_read_a_two_ppm_background() -> None:
    """Fixed CH4 monitors at gas sites read about 2 ppm without a leak."""
    _fleet, vals, _cal = _series(SourceKind.LEAK, 20, np.arange(0.0, 24.0, 0.1))
    ch4 = vals[..., 0]
    assert ch4.min() > 1.85
    assert ch4.max() < 2.6
    assert 1.95 < np.median(ch4) < 2.2


def test_calibration_runs_read_reference_gas() -> None:
    """During a CEMS calibration run CO2 reads zero or span gas, not flue gas."""
    hours = np.arange(0.0, 48.0, 1.0 / 60.0)
    fleet, vals, cal = _series(SourceKind.CEMS, 10, hours)
    assert cal.any()
    assert not cal.all()
    co2 = vals[..., fleet.channels.index("co2_pct_vol")][cal]
    assert ((co2 < 0.2) | (np.abs(co2 - 15.0) < 0.2)).all()
