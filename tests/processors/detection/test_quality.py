"""Data-quality rules that hold on real data: duty cycles, plumes vs spikes, one ticket each."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from core.settings import DetectionSettings
from processors.detection import DETECTOR_NAMES, DetectionEngine, Detector, EventTable, Kind
from processors.detection.tables import concat_events

NS = 1_000_000_000
MIN_S = 60
HOUR_S = 3600
REPO = Path(__file__).resolve().parents[3]


def _opens(out: EventTable, detector: Detector) -> list[int]:
    """Opening times (s) of one detector."""
    return [
        int(out.at_ns[j]) // NS
        for j in range(len(out))
        if out.detector[j] == detector and out.opened[j]
    ]


def _names(out: EventTable) -> set[str]:
    return {DETECTOR_NAMES[Detector(int(d))] for d in out.detector}


def _process(
    engine: DetectionEngine, sid: int, ts_s: np.ndarray, values: np.ndarray, batches: int = 1
) -> EventTable:
    """Feed one stream in ``batches`` cuts and collect every event."""
    ts = ts_s.astype(np.int64) * NS
    parts = []
    for cut in np.array_split(np.arange(ts.shape[0]), batches):
        out = engine.process(
            np.full(cut.size, sid, np.int64), ts[cut], values[cut], np.ones(cut.size, bool)
        )
        parts.append(out.events)
    return concat_events(parts)


def _inlet_cycle(days: float, *, outage: tuple[float, float] | None = None) -> np.ndarray:
    """1-min readings for the first 30 min of every hour (inlet switching), optional outage."""
    t = np.arange(0, int(days * 86_400), MIN_S)
    t = t[(t % HOUR_S) < 30 * MIN_S]
    if outage is not None:
        a, b = outage
        t = t[(t < a) | (t >= b)]
    return t


@pytest.mark.parametrize("batches", [1, 7])
def test_inlet_duty_cycle_pauses_are_not_gaps(batches: int) -> None:
    """Two days of a 30-min-per-hour inlet cycle: at most the first pause is a gap."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("tower/tac/inlet-100m", "ch4_ppb", Kind.CITY)
    t = _inlet_cycle(2.0)
    v = 1900.0 + 2.0 * np.random.default_rng(1).standard_normal(t.size)
    out = _process(engine, sid, t, v, batches)
    assert len(_opens(out, Detector.GAP)) <= 1
    # before the fix: one gap per hour, ~47 in two days


def test_outage_longer_than_the_duty_cycle_is_one_gap() -> None:
    """A 6-hour outage on a duty-cycled inlet is still reported, once."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("tower/tac/inlet-100m", "ch4_ppb", Kind.CITY)
    t = _inlet_cycle(3.0, outage=(36 * HOUR_S, 42 * HOUR_S))
    v = 1900.0 + 2.0 * np.random.default_rng(2).standard_normal(t.size)
    gaps = _opens(_process(engine, sid, t, v), Detector.GAP)
    assert [g for g in gaps if g > 6 * HOUR_S] == [42 * HOUR_S]


def test_hourly_means_with_repeated_values_are_neither_gaps_nor_stuck() -> None:
    """Hourly data (interval learned) with a few exact repeats raises no gap and no stuck."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("niwa/bhd/ch4", "ch4_ppb", Kind.CITY)
    t = np.arange(0, 60 * 86_400, HOUR_S)
    v = np.round(1780.0 + 1.0 * np.random.default_rng(3).standard_normal(t.size), 0)
    v[100:103] = v[100]  # three equal hourly means: chance, not a stuck analyser
    out = _process(engine, sid, t, v)
    assert _opens(out, Detector.GAP) == []
    assert _opens(out, Detector.STUCK) == []


@pytest.mark.parametrize(
    ("device", "metric", "kind", "level", "sd"),
    [
        ("city/bj/st-01", "ch4_ppb", Kind.CITY, 1950.0, 3.0),
        ("gas/site-1/lm-01", "ch4_ppm", Kind.LEAK, 2.0, 0.05),
    ],
)
def test_short_rise_above_background_is_signal_not_a_spike(
    device: str, metric: str, kind: Kind, level: float, sd: float
) -> None:
    """One-sample rises on city/leak streams open no spike; a drop below background does."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register(device, metric, kind)
    n = 1500
    t = np.arange(n) * MIN_S
    v = level + sd * np.random.default_rng(4).standard_normal(n)
    for i in (900, 1000, 1100):
        v[i] += 40 * sd  # local plume puffs: real air
    v[1300] -= 20 * sd  # far below background in one sample: not ambient air
    out = _process(engine, sid, t, v)
    assert _opens(out, Detector.SPIKE) == [1301 * MIN_S]


def test_mine_sensor_one_sample_jump_is_still_a_spike() -> None:
    """Mine CH4 keeps the two-sided spike rule (its jumps are judged by levels anyway)."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("m/s/t2-07", "ch4_pct_vol")
    n = 900
    v = 0.3 + 0.01 * np.random.default_rng(3).standard_normal(n)
    v[700] += 0.4
    out = _process(engine, sid, np.arange(n) * 10, v)
    assert _opens(out, Detector.SPIKE) == [701 * 10]


@pytest.mark.parametrize("batches", [1, 5])
def test_recurring_spikes_are_one_ticket_per_episode(batches: int) -> None:
    """Spikes every 20 min for 3 h are one ticket; one two days later opens a second."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("plant/p1/pump-3", "vibration_mm_s", Kind.GENERIC)
    n = 6 * 86_400 // MIN_S
    t = np.arange(n) * MIN_S
    v = 5.0 + 0.05 * np.random.default_rng(5).standard_normal(n)
    first = 2 * 86_400 // MIN_S
    for i in range(first, first + 180, 20):
        v[i] += 3.0
    v[first + 2 * 1440] += 3.0
    spikes = _opens(_process(engine, sid, t, v, batches), Detector.SPIKE)
    assert spikes == [(first + 1) * MIN_S, (first + 2 * 1440 + 1) * MIN_S]


def test_a_gap_on_every_metric_of_a_device_is_one_ticket() -> None:
    """A device silent on its CO2 and CH4 at once gets one gap ticket, not one per metric."""
    engine = DetectionEngine(DetectionSettings())
    ids = [engine.register("city/bj/st-02", m, Kind.CITY) for m in ("co2_ppm", "ch4_ppb")]
    t = np.arange(0, 2 * 86_400, MIN_S)
    t = t[(t < 86_400) | (t >= 86_400 + 4 * HOUR_S)]
    rng = np.random.default_rng(6)
    s = np.repeat(np.asarray(ids, np.int64), t.size)
    ts = np.tile(t, 2).astype(np.int64) * NS
    v = np.concatenate([420 + rng.standard_normal(t.size), 1950 + 3 * rng.standard_normal(t.size)])
    out = engine.process(s, ts, v, np.ones(s.size, bool)).events
    assert _opens(out, Detector.GAP) == [86_400 + 4 * HOUR_S]


def test_stuck_that_chatters_is_one_ticket() -> None:
    """A sensor stuck, briefly moving, and stuck again within a day is one stuck ticket."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("gas/site-1/lm-02", "ch4_ppm", Kind.LEAK)
    n = 4 * 86_400 // MIN_S
    t = np.arange(n) * MIN_S
    v = 2.0 + 0.05 * np.random.default_rng(7).standard_normal(n)
    a = 86_400 // MIN_S
    v[a : a + 180] = 2.01
    v[a + 185 : a + 400] = 2.02
    out = _process(engine, sid, t, v)
    assert len(_opens(out, Detector.STUCK)) == 1
    assert "stuck" in _names(out)


def _quality_real() -> ModuleType:
    path = REPO / "benchmarks" / "quality_real.py"
    spec = importlib.util.spec_from_file_location("quality_real", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["quality_real"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_station_targets_on_the_real_sets() -> None:
    """On the real tower and stations: <= 0.05 pages and <= 1 ticket per device-day."""
    q = _quality_real()
    data = q.default_data_dir()
    if not (data / "stations").is_dir():
        pytest.skip(f"real station data not present at {data / 'stations'} (not in the project)")
    figures = q.run_stations(data, DetectionSettings())
    assert figures, "no station set found"
    for fig in figures:
        if fig.device_days < 7:
            continue  # RBM: an empty station with one stray value
        assert fig.pages_per_device_day <= q.STATION_PAGES_TARGET, fig.line()
        assert fig.tickets_per_device_day <= q.STATION_TICKETS_TARGET, fig.line()


def test_skab_targets_on_the_real_set() -> None:
    """SKAB, scored point-wise as its leaderboard does, with the default settings: F1 >= 0.80
    with false alarms <= 15 %, on the development split and on the held-out experiments."""
    q = _quality_real()
    data = q.default_data_dir()
    if not (data / "skab" / "data").is_dir():
        pytest.skip(f"SKAB not present at {data / 'skab'} (not in the project)")
    res = q.run_skab(data, DetectionSettings())
    assert res is not None
    assert res.all.f1 >= q.SKAB_F1_TARGET, res.all.text()
    assert res.all.far <= q.SKAB_FAR_TARGET, res.all.text()
    # not carried by one split: the held-out experiments reach the target too
    assert res.held_out.f1 >= q.SKAB_F1_TARGET, res.held_out.text()
    assert res.free_far is not None
    assert res.free_far <= 0.05


def test_an_outage_now_and_then_is_not_learned_as_a_duty_cycle() -> None:
    """Two 30-min outages two days apart on a 10 s leak monitor are both gaps."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("gas/site-2/lm-01", "ch4_ppm", Kind.LEAK)
    t = np.arange(0, 4 * 86_400, 10)
    day = 86_400
    t = t[((t < day) | (t >= day + 1800)) & ((t < 3 * day) | (t >= 3 * day + 1800))]
    v = 2.0 + 0.05 * np.random.default_rng(8).standard_normal(t.size)
    assert _opens(_process(engine, sid, t, v, 3), Detector.GAP) == [day + 1800, 3 * day + 1800]
