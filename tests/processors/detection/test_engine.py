"""Detector behaviour on constructed series with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.settings import DetectionSettings
from processors.detection import (
    DETECTOR_NAMES,
    NEVER_NS,
    DetectionEngine,
    Detector,
    EventTable,
    Kind,
    flag_codes,
)

NS = 1_000_000_000
STEP_S = 10


def _events(out: EventTable) -> list[tuple[str, str, bool, int, int]]:
    """(device, detector, opened, at reading #, started reading #) with 10 s sampling."""
    return [
        (
            out.device_id[j],
            DETECTOR_NAMES[Detector(int(out.detector[j]))],
            bool(out.opened[j]),
            int(out.at_ns[j]) // (STEP_S * NS),
            int(out.started_ns[j]) // (STEP_S * NS),
        )
        for j in range(len(out))
    ]


def _run(
    engine: DetectionEngine,
    device: str,
    metric: str,
    values: np.ndarray,
    flags: np.ndarray | None = None,
) -> EventTable:
    sid = engine.register(device, metric)
    n = values.shape[0]
    ts = np.arange(n, dtype=np.int64) * STEP_S * NS
    usable = np.ones(n, bool) if flags is None else flags
    out = engine.process(np.full(n, sid, np.int64), ts, values.astype(float), usable)
    return out.events


def _background(n: int, seed: int = 3, level: float = 0.3, sd: float = 0.01) -> np.ndarray:
    return level + sd * np.random.default_rng(seed).standard_normal(n)


def test_alarm_raised_at_the_exact_crossing_reading() -> None:
    """A T1 sensor crossing 1.0 % raises threshold_alarm at that reading, 1.5 % power_cut."""
    engine = DetectionEngine(DetectionSettings())
    v = np.full(50, 0.4)
    v[20] = 1.0  # exactly the alarm level: ">= 1.0 %" alarms
    v[21:30] = 1.2
    v[30] = 1.5
    v[31:40] = 1.6
    ev = _events(_run(engine, "m/s/t1-01", "ch4_pct_vol", v))
    opens = {(d, at) for _, d, o, at, _ in ev if o}
    assert ("threshold_alarm", 20) in opens
    assert ("power_cut", 30) in opens
    assert not any(d in {"threshold_alarm", "power_cut"} and at < 20 for d, at in opens)


def test_power_cut_restores_only_below_the_restore_level() -> None:
    """T1 power cut (1.5 %) holds while CH4 sits between 1.0 and 1.5 % and clears below 1.0 %."""
    cfg = DetectionSettings(level_clear_samples=1)
    engine = DetectionEngine(cfg)
    v = np.concatenate([np.full(10, 0.4), np.full(5, 1.6), np.full(10, 1.2), np.full(5, 0.8)])
    ev = _events(_run(engine, "m/s/t1-02", "ch4_pct_vol", v))
    cut = [(o, at, st) for _, d, o, at, st in ev if d == "power_cut"]
    assert cut == [(True, 10, 10), (False, 25, 10)]


def test_restore_needs_consecutive_readings_below_the_level() -> None:
    """One reading dipping below the restore level does not clear and re-raise the alarm."""
    engine = DetectionEngine(DetectionSettings(level_clear_samples=3))
    v = np.concatenate([np.full(10, 0.4), [1.1, 1.1, 0.9, 1.1, 1.1], np.full(6, 0.5)])
    ev = _events(_run(engine, "m/s/t2-03", "ch4_pct_vol", v))
    alarm = [(o, at) for _, d, o, at, _ in ev if d == "threshold_alarm"]
    assert alarm == [(True, 10), (False, 17)]


def test_per_sensor_override_replaces_location_levels() -> None:
    """A device in sensor_levels uses its own alarm level instead of its location class."""
    cfg = DetectionSettings.model_validate({"sensor_levels": {"m/s/t1-04": {"alarm_pct_vol": 0.6}}})
    engine = DetectionEngine(cfg)
    v = np.concatenate([np.full(10, 0.4), np.full(5, 0.65)])
    ev = _events(_run(engine, "m/s/t1-04", "ch4_pct_vol", v))
    assert ("m/s/t1-04", "threshold_alarm", True, 10, 10) in ev


def test_flagged_calibration_gas_raises_nothing() -> None:
    """Calibration gas (flag C) far above the alarm level is kept out of every detector."""
    engine = DetectionEngine(DetectionSettings())
    v = _background(600)
    flags = ["N"] * 600
    for j in range(300, 330):
        v[j] = 2.0
        flags[j] = "C"
    codes = flag_codes(flags)
    out = _run(engine, "m/s/t1-05", "ch4_pct_vol", v, flags=engine.usable(codes, v))
    assert _events(out) == []


def test_step_release_detected_within_two_minutes_and_cleared() -> None:
    """A 0.2 % step above a noisy baseline opens `release` within 2 min and clears after it."""
    engine = DetectionEngine(DetectionSettings())
    v = _background(1200)
    v[800:900] += 0.2
    ev = _events(_run(engine, "m/s/t2-06", "ch4_pct_vol", v))
    rel = [(o, at) for _, d, o, at, _ in ev if d == "release"]
    assert len(rel) == 2
    assert rel[0][0]
    assert 800 <= rel[0][1] <= 812
    assert not rel[1][0]
    assert rel[1][1] >= 900


def test_single_noisy_sample_pages_nobody() -> None:
    """A one-sample spike is reported as a spike fault, never as a release."""
    engine = DetectionEngine(DetectionSettings())
    v = _background(900)
    v[700] += 0.4
    ev = _events(_run(engine, "m/s/t2-07", "ch4_pct_vol", v))
    assert [(d, st) for _, d, _, _, st in ev] == [("spike", 700)]


def test_white_noise_background_raises_no_alarm() -> None:
    """A day of fault-free noise on 20 sensors raises no release or anomaly."""
    engine = DetectionEngine(DetectionSettings())
    n, k = 8640, 20
    rng = np.random.default_rng(11)
    ids = [engine.register(f"m/s/t1-{i:02d}", "ch4_pct_vol") for i in range(k)]
    ts = np.tile(np.arange(n, dtype=np.int64) * STEP_S * NS, k)
    values = 0.3 + 0.02 * rng.standard_normal(n * k)
    out = engine.process(np.repeat(np.asarray(ids), n), ts, values, np.ones(n * k, bool))
    names = {DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector}
    assert not names & {"release", "anomaly", "threshold_alarm"}


def test_output_does_not_depend_on_batching() -> None:
    """Cutting the same readings into random batches gives identical events."""
    cfg = DetectionSettings()
    rng = np.random.default_rng(5)
    n, k = 2000, 8
    values = 0.3 + 0.01 * rng.standard_normal((k, n))
    values[1, 900:1000] += 0.5
    values[3, 1200] = 1.4
    values[5, 1500:] += np.linspace(0, 1.5, n - 1500)
    ts = np.arange(n, dtype=np.int64) * STEP_S * NS

    def run(cuts: list[int]) -> list[tuple[str, int, bool, int, int]]:
        engine = DetectionEngine(cfg)
        ids = np.asarray([engine.register(f"m/s/t1-{i}", "ch4_pct_vol") for i in range(k)])
        stream = np.tile(ids, n)  # interleaved in time order, as they arrive
        tt = np.repeat(ts, k)
        vv = values.T.ravel()
        out: list[tuple[str, int, bool, int, int]] = []
        bounds = [0, *cuts, n * k]
        for a, b in itertools.pairwise(bounds):
            ev = engine.process(stream[a:b], tt[a:b], vv[a:b], np.ones(b - a, bool)).events
            out += [
                (ev.device_id[j], int(ev.detector[j]), bool(ev.opened[j]),
                 int(ev.started_ns[j]), int(ev.at_ns[j]))
                for j in range(len(ev))
            ]  # fmt: skip
        return out

    whole = run([])
    assert whole
    assert run(sorted(rng.choice(n * k, 37, replace=False).tolist())) == whole
    assert run(list(range(1, n * k, 1))[::997]) == whole


def test_late_reading_is_counted_and_not_detected() -> None:
    """A normal reading older than its stream's watermark is counted as late, changes nothing."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("m/s/t1-08", "ch4_pct_vol")
    one = np.ones(1, bool)
    engine.process(np.asarray([sid]), np.asarray([100 * NS]), np.asarray([0.3]), one)
    out = engine.process(np.asarray([sid]), np.asarray([50 * NS]), np.asarray([0.35]), one)
    assert out.late == 1
    assert len(out.events) == 0
    assert engine.late_readings == 1
    assert engine.watermark_ns(sid) == 100 * NS


def test_late_normal_readings_leave_detections_unchanged() -> None:
    """Late normal readings mixed into a series change none of its detections."""
    v = _background(1200, seed=21)
    v[600:700] += 1.5  # a release crossing the T1 alarm level
    ts = np.arange(1200, dtype=np.int64) * STEP_S * NS
    ref = DetectionEngine(DetectionSettings())
    sid = ref.register("m/s/t1-20", "ch4_pct_vol")
    want = _events(ref.process(np.full(1200, sid), ts, v, np.ones(1200, bool)).events)
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("m/s/t1-20", "ch4_pct_vol")
    got = []
    for a in range(0, 1200, 100):
        b = a + 100
        got += _events(
            engine.process(np.full(100, sid), ts[a:b], v[a:b], np.ones(100, bool)).events
        )
        if a >= 100:  # re-sent normal readings of the previous block arrive late
            late_ts = ts[a - 100 : a - 50] + NS
            out = engine.process(np.full(50, sid), late_ts, v[a - 100 : a - 50] * 0 + 0.3,
                                 np.ones(50, bool))  # fmt: skip
            assert out.late == 50
            got += _events(out.events)
    assert got == want
    assert any(d == "threshold_alarm" for _, d, _, _, _ in want)


def test_late_over_threshold_reading_alarms_at_its_own_time() -> None:
    """A late reading over the alarm and cut levels raises both, started at its own timestamp."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("m/s/t1-21", "ch4_pct_vol")
    n = 100
    ts = np.arange(n, dtype=np.int64) * STEP_S * NS
    engine.process(np.full(n, sid), ts, _background(n, seed=5), np.ones(n, bool))
    late_t = 40 * STEP_S * NS + NS
    out = engine.process(
        np.asarray([sid]), np.asarray([late_t]), np.asarray([2.0]), np.ones(1, bool)
    )
    assert out.late == 1
    got = {
        (DETECTOR_NAMES[Detector(int(d))], int(a), int(e))
        for d, a, e in zip(
            out.events.detector, out.events.started_ns, out.events.ended_ns, strict=True
        )
    }
    assert got == {("threshold_alarm", late_t, late_t), ("power_cut", late_t, late_t)}
    assert engine.watermark_ns(sid) == ts[-1]
    # the stateful alarm never opened: the next normal reading clears nothing
    nxt = engine.process(np.asarray([sid]), np.asarray([ts[-1] + STEP_S * NS]),
                         np.asarray([0.3]), np.ones(1, bool))  # fmt: skip
    assert len(nxt.events) == 0


def test_grace_merges_out_of_order_batches_in_event_time_order() -> None:
    """Within late_grace_s, readings split over batches out of order give the in-order result."""
    v = _background(600, seed=22)
    v[300:340] += 1.5
    ts = np.arange(600, dtype=np.int64) * STEP_S * NS
    want = _events(_run(DetectionEngine(DetectionSettings()), "m/s/t1-22", "ch4_pct_vol", v))
    engine = DetectionEngine(DetectionSettings(late_grace_s=60.0))
    sid = engine.register("m/s/t1-22", "ch4_pct_vol")
    idx = np.arange(600).reshape(-1, 4)[:, ::-1].reshape(-1)  # each 40 s reversed
    got = []
    late = 0
    for a in range(0, 600, 4):
        j = idx[a : a + 4]
        for k in j:  # one reading per batch, newest of each group first
            out = engine.process(np.asarray([sid]), ts[k : k + 1], v[k : k + 1], np.ones(1, bool))
            late += out.late
            got += _events(out.events)
    assert engine.held_back > 0
    got += _events(engine.flush().events)
    assert late == 0
    assert engine.held_back == 0
    assert got == want


def test_out_of_order_within_a_batch_is_sorted() -> None:
    """Readings of one batch arriving out of order are processed in time order."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("m/s/t1-09", "ch4_pct_vol")
    ts = np.asarray([3, 1, 2, 0], np.int64) * STEP_S * NS
    vals = np.asarray([0.3, 1.2, 0.3, 0.3])
    out = engine.process(np.full(4, sid), ts, vals, np.ones(4, bool))
    assert out.late == 0
    ev = _events(out.events)
    assert ("m/s/t1-09", "threshold_alarm", True, 1, 1) in ev


def test_gap_stuck_and_out_of_range_are_faults() -> None:
    """Silence, a frozen value and a negative reading are reported as maintenance faults."""
    engine = DetectionEngine(DetectionSettings(stuck_s=600.0, gap_s=120.0))
    sid = engine.register("m/s/t1-10", "ch4_pct_vol")
    v = _background(400)
    v[100:200] = 0.31  # stuck for 1000 s
    v[300] = -0.5  # below the plausible range
    ts = np.arange(400, dtype=np.int64) * STEP_S * NS
    ts[350:] += 600 * NS  # a 10-minute gap
    out = engine.process(np.full(400, sid), ts, v, np.ones(400, bool))
    ev = _events(out.events)
    opened = {d for _, d, o, _, _ in ev if o}
    assert {"stuck", "out_of_range", "gap"} <= opened
    assert not opened & {"release", "threshold_alarm"}
    stuck_open = [at for _, d, o, at, _ in ev if d == "stuck" and o]
    assert stuck_open == [160]


def test_generic_detector_finds_shifts_both_ways_on_any_scale() -> None:
    """An unknown metric gets the generic anomaly detector; it scales with the data."""
    for scale in (1e-3, 1.0, 1e4):
        engine = DetectionEngine(DetectionSettings())
        rng = np.random.default_rng(7)
        v = scale * (50 + rng.standard_normal(3000))
        v[1500:1600] -= 12 * scale
        v[2200:2300] += 12 * scale
        ev = _events(_run(engine, "x/y/z", "vibration_mm_s", v))
        onsets = [at for _, d, o, at, _ in ev if d == "anomaly" and o]
        assert len(onsets) == 2, scale
        assert 1500 <= onsets[0] <= 1510
        assert 2200 <= onsets[1] <= 2210


def test_generic_shift_that_stays_becomes_the_new_normal_after_the_warmup_samples() -> None:
    """A generic channel that moves to a new steady level (a machine at a new operating
    point) is anomalous at the move, then is taken as normal after generic_warmup_samples
    samples open - not after rebaseline_s (4 h), which for a fast stream of unknown time scale
    would keep the detection open long after the change."""
    cfg = DetectionSettings()
    engine = DetectionEngine(cfg)
    rng = np.random.default_rng(11)
    v = 50 + rng.standard_normal(3200)
    v[1500:] += 12
    ev = _events(_run(engine, "x/y/pump", "vibration_mm_s", v))
    anomalies = [(o, at) for _, d, o, at, _ in ev if d == "anomaly"]
    assert anomalies[0] == (True, anomalies[0][1])
    assert 1500 <= anomalies[0][1] <= 1510
    cleared = [at for o, at in anomalies if not o]
    n = cfg.generic_warmup_samples
    assert cleared, "still open at the end"
    assert 1500 + n <= cleared[0] <= 1500 + 2 * n
    assert cleared[0] * STEP_S < 1500 * STEP_S + cfg.rebaseline_s
    assert [o for o, _ in anomalies] == [True, False]


def test_city_plume_and_enhancement_series() -> None:
    """A city CO2 plume opens `plume`; derived enhancement rows are emitted per reading."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("baotou/st-01/picarro", "co2_ppm", Kind.CITY)
    n = 600
    rng = np.random.default_rng(2)
    v = 420 + 0.3 * rng.standard_normal(n)
    v[400:450] += 30
    ts = np.arange(n, dtype=np.int64) * 60 * NS
    out = engine.process(np.full(n, sid), ts, v, np.ones(n, bool))
    names = [DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector]
    assert "plume" in names
    assert set(out.derived.series) == {"co2_ppm_enhancement", "co2_ppm_background"}
    enh = np.asarray(out.derived.value)[: len(out.derived) // 2]
    assert enh[420] > 20


def test_cleared_event_repeats_the_onset_time() -> None:
    """A CLEARED row carries the onset time of its OPEN row, across batches."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("m/s/t1-11", "ch4_pct_vol")
    v = np.concatenate([np.full(5, 0.3), np.full(5, 1.2), np.full(5, 0.3)])
    ts = np.arange(15, dtype=np.int64) * STEP_S * NS
    first = engine.process(np.full(7, sid), ts[:7], v[:7], np.ones(7, bool)).events
    second = engine.process(np.full(8, sid), ts[7:], v[7:], np.ones(8, bool)).events
    assert list(first.opened) == [True]
    assert list(second.opened) == [False]
    assert int(second.started_ns[0]) == int(first.started_ns[0]) == 5 * STEP_S * NS
    assert int(first.ended_ns[0]) == NEVER_NS


@pytest.mark.parametrize("location", ["T0", "T1", "T2", "T3", "T7", "main_return"])
def test_every_location_class_alarms_at_its_regulation_level(location: str) -> None:
    """Each location class alarms at the level DOMAIN.md gives, not one sample later."""
    cfg = DetectionSettings()
    level = cfg.mine_levels[location].alarm_pct_vol
    assert level is not None
    engine = DetectionEngine(cfg)
    v = np.concatenate([np.full(10, level / 4), [level - 0.01, level]])
    ev = _events(_run(engine, f"m/s/{location.lower()}-1", "ch4_pct_vol", v))
    assert (f"m/s/{location.lower()}-1", "threshold_alarm", True, 11, 11) in ev


def test_slow_drift_is_a_maintenance_fault_not_a_release() -> None:
    """A sensor drifting 0.3 % over 12 h gets a drift fault and never a release."""
    engine = DetectionEngine(DetectionSettings())
    n = 8640 * 2  # two days at 10 s
    v = _background(n, seed=9)
    t_h = np.arange(n) * STEP_S / 3600.0
    v += np.clip((t_h - 12.0) / 12.0, 0.0, 1.0) * 0.3
    ev = _events(_run(engine, "m/s/t1-12", "ch4_pct_vol", v))
    opened = [(d, at) for _, d, o, at, _ in ev if o]
    assert [d for d, _ in opened] == ["drift"]
    assert 12 * 360 < opened[0][1] < 26 * 360


def test_city_diurnal_cycle_is_not_drift_but_a_calibration_drift_is() -> None:
    """A city CO2 diurnal cycle raises no drift; the same station drifting 40 ppm does."""
    n = 60 * 24 * 5  # five days at 1 min
    t_d = np.arange(n) / 1440.0
    rng = np.random.default_rng(4)
    clean = 425 + 15 * np.cos(2 * np.pi * t_d) + 0.3 * rng.standard_normal(n)
    ts = np.arange(n, dtype=np.int64) * 60 * NS
    for values, expect in ((clean, False), (clean + np.clip(t_d - 2.0, 0, 1) * 40, True)):
        engine = DetectionEngine(DetectionSettings())
        sid = engine.register("baotou/st-02/picarro", "co2_ppm", Kind.CITY)
        out = engine.process(np.full(n, sid), ts, values, np.ones(n, bool))
        names = {DETECTOR_NAMES[Detector(int(d))] for d in out.events.detector}
        assert ("drift" in names) is expect


def test_gap_is_relative_to_the_streams_own_sampling_interval() -> None:
    """Hourly data is not a gap every hour; six silent hours in it are one gap."""
    engine = DetectionEngine(DetectionSettings())
    sid = engine.register("x/y/hourly", "river_level_m")
    hours = np.concatenate([np.arange(48), np.arange(54, 80)]).astype(np.int64)
    ts = hours * 3600 * NS
    v = 3.0 + 0.01 * np.random.default_rng(1).standard_normal(hours.size)
    out = engine.process(np.full(hours.size, sid), ts, v, np.ones(hours.size, bool))
    gaps = [
        (int(out.events.started_ns[j]) // (3600 * NS), int(out.events.at_ns[j]) // (3600 * NS))
        for j in range(len(out.events))
        if out.events.detector[j] == Detector.GAP
    ]
    assert gaps == [(47, 54)]


def _city_network(drifting: int | None, common_rise: float) -> set[tuple[str, str]]:
    """Four Baotou CO2 stations, 1-min data for 3 days; return (device, detector) opened."""
    n = 60 * 24 * 3
    t_d = np.arange(n) / 1440.0
    ts = np.arange(n, dtype=np.int64) * 60 * NS
    rng = np.random.default_rng(31)
    common = 425 + 15 * np.cos(2 * np.pi * t_d) + common_rise * np.clip((t_d - 1.5) * 4, 0, 1)
    engine = DetectionEngine(DetectionSettings())
    streams, times, values = [], [], []
    for k, offset in enumerate((0.0, 6.0, -4.0, 9.0)):
        sid = engine.register(f"baotou/st-{k}/picarro", "co2_ppm", Kind.CITY)
        v = common + offset + 0.3 * rng.standard_normal(n)
        if k == drifting:
            v = v + 10.0 * np.clip((t_d - 1.75) * 8, 0, 1)  # +10 ppm over 3 h
        streams.append(np.full(n, sid))
        times.append(ts)
        values.append(v)
    s = np.concatenate(streams)
    t = np.concatenate(times)
    x = np.concatenate(values)
    order = np.argsort(t, kind="stable")
    s, t, x = s[order], t[order], x[order]
    found: set[tuple[str, str]] = set()
    for a in range(0, s.shape[0], 5000):  # live-sized batches
        b = a + 5000
        ev = engine.process(s[a:b], t[a:b], x[a:b], np.ones(x[a:b].shape[0], bool)).events
        for j in range(len(ev)):
            if ev.opened[j]:
                found.add((ev.device_id[j], DETECTOR_NAMES[Detector(int(ev.detector[j]))]))
    return found


def test_station_drifting_against_its_neighbours_is_found() -> None:
    """One city station drifting 10 ppm over 3 h while the others hold gets neighbour_drift."""
    found = _city_network(drifting=2, common_rise=0.0)
    assert {d for d, det in found if det == "neighbour_drift"} == {"baotou/st-2/picarro"}


def test_common_regional_rise_is_not_neighbour_drift() -> None:
    """All stations rising 20 ppm together raises no neighbour_drift."""
    found = _city_network(drifting=None, common_rise=20.0)
    assert not {d for d, det in found if det == "neighbour_drift"}
