"""CEMS site configuration: pressure without a barometer, wet-basis analysers, net intensity.

Every expected value is written out here from the HJ 75 formulas in plain numpy, not from
``wire.cems``, so a slip in the shared formula fails these tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import DetectionSettings
from processors.detection import DETECTOR_NAMES, DetectionEngine, Detector, EngineOutput

NS = 1_000_000_000
UNIT = "beifang-power/dalate-plant/unit-1"
BASE = {
    "co2_pct_vol": 12.0,
    "flow_m3_h": 2_000_000.0,
    "flue_temp_c": 126.85,
    "static_pressure_pa": -300.0,
    "moisture_pct_vol": 10.0,
    "o2_pct_vol": 6.0,
    "load_mw": 500.0,
}


def _feed(cfg: DetectionSettings, channels: dict[str, float], minutes: int = 61) -> EngineOutput:
    """Every channel every 30 s for ``minutes`` minutes (+1 reading to close the last)."""
    engine = DetectionEngine(cfg)
    streams, ts, vals = [], [], []
    for name, value in channels.items():
        sid = engine.register(UNIT, name)
        for k in range(minutes * 2 + 1):
            streams.append(sid)
            ts.append(k * 30 * NS)
            vals.append(value)
    n = len(ts)
    return engine.process(np.asarray(streams), np.asarray(ts), np.asarray(vals), np.ones(n, bool))


def _series(out: EngineOutput, name: str) -> tuple[np.ndarray, np.ndarray]:
    sel = np.asarray([s == name for s in out.derived.series])
    return out.derived.value[sel], out.derived.valid[sel]


def _hj75_g_t_h(co2_dry_pct: float, baro_pa: float, flow: float = 2e6) -> float:
    """HJ 75 by hand: Q_sn = Q_s·273.15/(273.15+t)·(B_a+P_s)/101325·(1−X_sw); G = C·Q_sn."""
    q_sn = flow * 273.15 / (273.15 + 126.85) * (baro_pa - 300.0) / 101_325.0 * (1 - 0.10)
    mg_m3 = co2_dry_pct * 10_000 * 44.01 / 22.414
    return mg_m3 * q_sn * 1e-9


def test_a_unit_with_no_pressure_reading_and_no_site_pressure_has_no_valid_minute() -> None:
    """No barometer and nothing configured: every minute and the hour are invalid, no value."""
    out = _feed(DetectionSettings(), BASE)
    minute, minute_ok = _series(out, "co2_mass_t_h")
    assert minute.shape[0] == 61
    assert not minute_ok.any()
    assert np.isnan(minute).all()
    _, hour_ok = _series(out, "co2_mass_t_h_1h")
    assert hour_ok.tolist() == [False]
    names = [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
    assert "hour_invalid" in names


def test_a_unit_at_altitude_without_a_barometer_uses_the_standard_atmosphere() -> None:
    """Ordos at 1,450 m: B_a = 101325·(1 − 2.25577e-5·1450)^5.25588 ≈ 85,080 Pa, not 101,325."""
    cfg = DetectionSettings(cems_sites={UNIT: {"altitude_m": 1450.0}})
    out = _feed(cfg, BASE)
    baro = 101_325.0 * (1 - 2.25577e-5 * 1450.0) ** 5.25588
    assert baro == pytest.approx(85_076, rel=1e-4)
    hour, hour_ok = _series(out, "co2_mass_t_h_1h")
    assert hour_ok.tolist() == [True]
    assert hour[0] == pytest.approx(_hj75_g_t_h(12.0, baro), rel=1e-9)
    # a sea-level default would have overstated it by 19 %
    assert _hj75_g_t_h(12.0, 101_325.0) / hour[0] == pytest.approx(1.191, abs=0.001)
    site_minutes, _ = _series(out, "site_pressure_minutes_1h")
    assert site_minutes.tolist() == [60.0]


def test_a_configured_site_pressure_wins_over_altitude_and_a_reading_over_both() -> None:
    """Measured pressure first, then the configured site pressure, then the altitude."""
    cfg = DetectionSettings(cems_sites={UNIT: {"altitude_m": 1450.0, "baro_pa": 88_000.0}})
    hour, _ = _series(_feed(cfg, BASE), "co2_mass_t_h_1h")
    assert hour[0] == pytest.approx(_hj75_g_t_h(12.0, 88_000.0), rel=1e-9)
    measured = {**BASE, "baro_pressure_pa": 90_000.0}
    out = _feed(cfg, measured)
    hour, _ = _series(out, "co2_mass_t_h_1h")
    assert hour[0] == pytest.approx(_hj75_g_t_h(12.0, 90_000.0), rel=1e-9)
    site_minutes, _ = _series(out, "site_pressure_minutes_1h")
    assert site_minutes.tolist() == [0.0]


def test_a_wet_basis_analyser_is_made_dry_with_the_measured_moisture() -> None:
    """11 % CO2 wet at 10 % moisture is 11/0.9 = 12.22 % dry; a dry analyser's 11 % is not."""
    with_baro = {**BASE, "co2_pct_vol": 11.0, "baro_pressure_pa": 90_000.0}
    wet = DetectionSettings(cems_sites={UNIT: {"co2_basis": "wet"}})
    hour, _ = _series(_feed(wet, with_baro), "co2_mass_t_h_1h")
    assert hour[0] == pytest.approx(_hj75_g_t_h(11.0 / (1 - 0.10), 90_000.0), rel=1e-9)
    dry = DetectionSettings()
    hour, _ = _series(_feed(dry, with_baro), "co2_mass_t_h_1h")
    assert hour[0] == pytest.approx(_hj75_g_t_h(11.0, 90_000.0), rel=1e-9)


def test_net_intensity_is_gross_over_one_minus_the_auxiliary_power_rate() -> None:
    """Gross g/kWh = G·10⁶/(load·10³); net divides by (1 − aux); the hour's mean load is kept."""
    cfg = DetectionSettings(cems_sites={UNIT: {"baro_pa": 90_000.0, "aux_power_frac": 0.08}})
    out = _feed(cfg, BASE)
    g = _hj75_g_t_h(12.0, 90_000.0)
    gross, _ = _series(out, "intensity_g_kwh_1h")
    net, net_ok = _series(out, "intensity_net_g_kwh_1h")
    load, _ = _series(out, "load_mw_1h")
    assert gross[0] == pytest.approx(g * 1e6 / (500.0 * 1e3), rel=1e-9)
    assert net[0] == pytest.approx(gross[0] / (1 - 0.08), rel=1e-12)
    assert net_ok.tolist() == [True]
    assert load.tolist() == pytest.approx([500.0])


def test_the_benchmark_warning_compares_net_not_gross_intensity() -> None:
    """Gross just under the limit, net above it: the supply-basis benchmark warns."""
    # limit: 300 g sce/kWh x 2.66 x 1.1 = 877.8 g CO2/kWh (supply basis)
    g = _hj75_g_t_h(12.0, 90_000.0)
    load = g * 1e3 / 860.0  # gross 860 g/kWh
    channels = {**BASE, "load_mw": load}
    sites = {UNIT: {"baro_pa": 90_000.0, "aux_power_frac": 0.06, "unit_class": "600mw_sc"}}
    names = [
        DETECTOR_NAMES[Detector(int(d))]
        for d in _feed(DetectionSettings(cems_sites=sites), channels).events.detector
    ]
    assert "intensity_above_benchmark" in names  # net 860 / 0.94 = 915 > 877.8
    sites[UNIT]["aux_power_frac"] = 0.0
    names = [
        DETECTOR_NAMES[Detector(int(d))]
        for d in _feed(DetectionSettings(cems_sites=sites), channels).events.detector
    ]
    assert "intensity_above_benchmark" not in names


def test_the_site_lookup_resolves_defaults_and_the_older_class_map() -> None:
    """cems_site() is the one lookup: default aux rate said to be a default, class fallback."""
    cfg = DetectionSettings(cems_unit_class={UNIT: "300mw_sc"})
    site = cfg.cems_site(UNIT)
    assert site.unit_class == "300mw_sc"
    assert site.aux_power_frac == cfg.cems_default_aux_power_frac
    assert not site.aux_configured
    assert site.baro_pa is None
    assert site.altitude_m is None
    assert site.co2_basis == "dry"
