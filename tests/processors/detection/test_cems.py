"""CEMS minute/hour mass emission rates, validity and implausible combinations."""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import DetectionSettings
from processors.detection import (
    CEMS_PARAMS,
    DETECTOR_NAMES,
    DetectionEngine,
    Detector,
    EngineOutput,
)
from wire import METRICS, SourceKind, co2_mass_rate_t_h, dry_standard_flow_m3_h

NS = 1_000_000_000
UNIT = "beifang/dalate/unit-1"
# 12 % CO2, 2,000,000 m3/h at 126.85 C (400 K), 90,000 Pa barometric, -300 Pa static, 10 % H2O:
# Q_sn = 2e6 x 273.15/400 x 89,700/101,325 x 0.9 = 1,088,151.96 m3/h
# G = 12 x 10^4 ppm x 44.01/22.414 mg/m3/ppm x Q_sn x 10^-9 = 256.391 t/h
HAND_Q_SN = 1_088_151.96
HAND_G_T_H = 256.391
CHANNELS = {
    "co2_pct_vol": 12.0,
    "flow_m3_h": 2_000_000.0,
    "flue_temp_c": 126.85,
    "baro_pressure_pa": 90_000.0,
    "static_pressure_pa": -300.0,
    "moisture_pct_vol": 10.0,
    "o2_pct_vol": 6.0,
    "load_mw": 500.0,
}


def _feed(
    engine: DetectionEngine,
    minutes: int,
    overrides: dict[str, dict[int, float]] | None = None,
    flagged: dict[str, set[int]] | None = None,
    unit: str = UNIT,
) -> EngineOutput:
    """Every channel every 30 s for `minutes` minutes (+1 reading to close the last one)."""
    streams, ts, vals, usable = [], [], [], []
    for name, base in CHANNELS.items():
        sid = engine.register(unit, name)
        for k in range(minutes * 2 + 1):
            minute = k // 2
            streams.append(sid)
            ts.append(k * 30 * NS)
            vals.append((overrides or {}).get(name, {}).get(minute, base))
            usable.append(minute not in (flagged or {}).get(name, set()))
    return engine.process(np.asarray(streams), np.asarray(ts), np.asarray(vals), np.asarray(usable))


def _series(out: EngineOutput, name: str) -> tuple[np.ndarray, np.ndarray]:
    sel = np.asarray([s == name for s in out.derived.series])
    return out.derived.value[sel], out.derived.valid[sel]


def test_formulas_match_the_hand_computation() -> None:
    """The HJ 75 dry standard flow and the CO2 mass rate give the hand-computed values."""
    q = dry_standard_flow_m3_h(
        np.asarray([2e6]), np.asarray([126.85]), np.asarray([90_000.0]),
        np.asarray([-300.0]), np.asarray([10.0]),
    )  # fmt: skip
    assert q[0] == pytest.approx(HAND_Q_SN, rel=1e-6)
    assert co2_mass_rate_t_h(np.asarray([12.0]), q)[0] == pytest.approx(HAND_G_T_H, rel=1e-5)


def test_a_full_hour_gives_the_hand_computed_rate_and_intensity() -> None:
    """Sixty valid minutes: minute and hour rates equal the hand value; intensity = G/load."""
    engine = DetectionEngine(DetectionSettings())
    out = _feed(engine, 61)
    minute, minute_ok = _series(out, "co2_mass_t_h")
    assert minute.shape[0] == 61
    assert minute_ok.all()
    assert minute == pytest.approx(HAND_G_T_H, rel=1e-5)
    hour, hour_ok = _series(out, "co2_mass_t_h_1h")
    assert hour.tolist() == pytest.approx([HAND_G_T_H], rel=1e-5)
    assert hour_ok.tolist() == [True]
    intensity, _ = _series(out, "intensity_g_kwh_1h")
    assert intensity[0] == pytest.approx(HAND_G_T_H * 1000 / 500.0, rel=1e-5)
    valid_minutes, _ = _series(out, "valid_minutes_1h")
    assert valid_minutes.tolist() == [60.0]


def test_hour_with_fewer_than_45_valid_minutes_is_invalid() -> None:
    """16 minutes of calibration-flagged CO2 leave 44 valid minutes: the hour is invalid."""
    engine = DetectionEngine(DetectionSettings())
    out = _feed(engine, 61, flagged={"co2_pct_vol": set(range(10, 26))})
    _, hour_ok = _series(out, "co2_mass_t_h_1h")
    assert hour_ok.tolist() == [False]
    names = [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
    assert "hour_invalid" in names
    # and with 15 flagged minutes (45 valid) it is valid
    engine = DetectionEngine(DetectionSettings())
    out = _feed(engine, 61, flagged={"co2_pct_vol": set(range(10, 25))})
    _, hour_ok = _series(out, "co2_mass_t_h_1h")
    assert hour_ok.tolist() == [True]


def test_flagged_minutes_stay_out_of_the_average() -> None:
    """Calibration gas (flagged) does not change the hourly mean mass rate."""
    engine = DetectionEngine(DetectionSettings())
    out = _feed(
        engine,
        61,
        overrides={"co2_pct_vol": dict.fromkeys(range(5, 10), 18.0)},
        flagged={"co2_pct_vol": set(range(5, 10))},
    )
    hour, _ = _series(out, "co2_mass_t_h_1h")
    assert hour[0] == pytest.approx(HAND_G_T_H, rel=1e-5)


def test_co2_and_load_without_flow_are_reported_and_cleared() -> None:
    """Flow reading zero while CO2 and load are normal opens both faults; they clear after."""
    engine = DetectionEngine(DetectionSettings())
    out = _feed(engine, 30, overrides={"flow_m3_h": dict.fromkeys(range(10, 20), 0.0)})
    ev = [
        (DETECTOR_NAMES[Detector(int(out.events.detector[j]))], bool(out.events.opened[j]),
         int(out.events.at_ns[j]) // (60 * NS))
        for j in range(len(out.events))
    ]  # fmt: skip
    assert ("co2_without_flow", True, 10) in ev
    assert ("co2_without_flow", False, 20) in ev
    assert ("load_without_flow", True, 10) in ev


def test_intensity_above_the_unit_class_benchmark_warns() -> None:
    """A unit whose hourly g CO2/kWh exceeds its class benchmark gets a warning."""
    cfg = DetectionSettings(cems_unit_class={UNIT: "600mw_sc"})
    engine = DetectionEngine(cfg)
    # 256.39 t/h at 250 MW = 1025 g/kWh > 300 g sce/kWh x 2.66 x 1.1 = 877.8
    out = _feed(engine, 61, overrides={"load_mw": dict.fromkeys(range(61), 250.0)})
    names = [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
    assert "intensity_above_benchmark" in names
    engine = DetectionEngine(cfg)
    out = _feed(engine, 61)  # 513 g/kWh at 500 MW: fine
    names = [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
    assert "intensity_above_benchmark" not in names


def test_minutes_close_the_same_whatever_the_batches() -> None:
    """Feeding an hour in two batches gives the same minute series as one batch."""
    whole = _feed(DetectionEngine(DetectionSettings()), 61)
    engine = DetectionEngine(DetectionSettings())
    streams = [engine.register(UNIT, name) for name in CHANNELS]
    n = 61 * 2 + 1
    ts = np.tile(np.arange(n, dtype=np.int64) * 30 * NS, len(streams))
    st = np.repeat(np.asarray(streams), n)
    vals = np.repeat(np.asarray(list(CHANNELS.values())), n)
    order = np.argsort(ts, kind="stable")
    ts, st, vals = ts[order], st[order], vals[order]
    half = ts.shape[0] // 2 + 3
    ones = np.ones(ts.shape[0], bool)
    a = engine.process(st[:half], ts[:half], vals[:half], ones[:half])
    b = engine.process(st[half:], ts[half:], vals[half:], ones[half:])
    got = np.concatenate([_series(a, "co2_mass_t_h")[0], _series(b, "co2_mass_t_h")[0]])
    assert got == pytest.approx(_series(whole, "co2_mass_t_h")[0])


def _names_at(out: EngineOutput) -> list[tuple[str, bool, int]]:
    ev = out.events
    return [
        (DETECTOR_NAMES[Detector(int(ev.detector[j]))], bool(ev.opened[j]),
         int(ev.started_ns[j]) // (60 * NS))
        for j in range(len(ev))
    ]  # fmt: skip


def test_mass_rate_step_at_steady_load_is_abnormal() -> None:
    """CO2 halving for five minutes at a steady load gives a step at each edge."""
    engine = DetectionEngine(DetectionSettings())
    out = _feed(engine, 40, overrides={"co2_pct_vol": dict.fromkeys(range(20, 25), 6.0)})
    steps = [m for name, _, m in _names_at(out) if name == "mass_rate_step"]
    assert steps == [20, 25]


def test_co2_plus_o2_above_air_is_implausible() -> None:
    """CO2 + O2 above what air combustion allows opens a fault that clears when it is gone."""
    engine = DetectionEngine(DetectionSettings())
    out = _feed(engine, 40, overrides={"o2_pct_vol": dict.fromkeys(range(30, 35), 15.0)})
    events = [(o, m) for name, o, m in _names_at(out) if name == "implausible_co2_o2"]
    assert events == [(True, 30), (False, 30)]


def test_cems_channels_are_exactly_the_metrics_ingest_accepts_from_cems_sources() -> None:
    """The aggregator's channels and the wire contract's CEMS metrics are the same set."""
    from_wire = {m for m, spec in METRICS.items() if SourceKind.CEMS in spec.kinds}
    assert set(CEMS_PARAMS) == from_wire
    assert len(CEMS_PARAMS) == len(from_wire)


def test_a_stopped_units_hour_counts_its_stopped_minutes_and_is_no_data_fault() -> None:
    """Every channel flagged F (HJ 212: the unit stopped) for 50 minutes of an hour: the hour
    is invalid, its stopped minutes are stored (the report does not substitute it), and no
    hour_invalid ticket is raised; a unit that merely lost 50 minutes still gets one."""
    engine = DetectionEngine(DetectionSettings())
    streams, ts, vals, flags = [], [], [], []
    for name, base in CHANNELS.items():
        sid = engine.register(UNIT, name)
        for k in range(61 * 2 + 1):
            streams.append(sid)
            ts.append(k * 30 * NS)
            vals.append(base)
            flags.append(ord("F") if 5 <= k // 2 < 55 else ord("N"))
    f = np.asarray(flags, np.uint8)
    v = np.asarray(vals)
    out = engine.process(np.asarray(streams), np.asarray(ts), v, engine.usable(f, v), flags=f)
    _, hour_ok = _series(out, "co2_mass_t_h_1h")
    assert hour_ok.tolist() == [False]
    stopped, _ = _series(out, "stopped_minutes_1h")
    assert stopped.tolist() == [50.0]
    names = [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
    assert "hour_invalid" not in names
    # the same 50 minutes flagged D (fault): invalid, no stopped minutes, a ticket
    engine = DetectionEngine(DetectionSettings())
    assert [engine.register(UNIT, name) for name in CHANNELS] == sorted(set(streams))
    f = np.where(f == ord("F"), ord("D"), f).astype(np.uint8)
    out = engine.process(np.asarray(streams), np.asarray(ts), v, engine.usable(f, v), flags=f)
    assert _series(out, "stopped_minutes_1h")[0].size == 0
    assert "hour_invalid" in [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
