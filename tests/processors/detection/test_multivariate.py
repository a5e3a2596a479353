"""The per-device multivariate score (Hotelling T²) of generic devices."""

from __future__ import annotations

import itertools

import numpy as np

from core.settings import DetectionSettings
from processors.detection import DETECTOR_NAMES, DetectionEngine, Detector, EventTable
from processors.detection.multivariate import MV_METRIC, chi2_upper
from processors.detection.tables import concat_events

NS = 1_000_000_000
SHIFT_AT = 900


def _correlated(n: int = 1500, seed: int = 5) -> np.ndarray:
    """Four channels driven by one common factor (sd 1) with small own noise (sd 0.05).

    From ``SHIFT_AT`` channel 2 moves by -4.5: three of its own sds (1.5), so inside its own
    z-range (the per-metric detector opens beyond z 6), but against the relation it keeps with
    the others (90 own-noise sds).
    """
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(n)
    gain = np.array([1.0, 2.0, -1.5, 0.5])
    v = 10.0 + common[:, None] * gain + 0.05 * rng.standard_normal((n, 4))
    v[SHIFT_AT:, 2] -= 4.5
    return v


def _replay(cfg: DetectionSettings, v: np.ndarray, cuts: tuple[int, ...] = ()) -> EventTable:
    engine = DetectionEngine(cfg)
    ids = [engine.register("plant/pump-1", f"ch{j}_unknown") for j in range(v.shape[1])]
    n = v.shape[0]
    ts = np.arange(n, dtype=np.int64) * NS
    parts: list[EventTable] = []
    bounds = (0, *cuts, n)
    for a, b in itertools.pairwise(bounds):
        s = np.repeat(np.asarray(ids, np.int64)[None, :], b - a, axis=0).ravel()
        t = np.repeat(ts[a:b], v.shape[1])
        parts.append(engine.process(s, t, v[a:b].ravel(), np.ones(s.size, bool)).events)
    return concat_events(parts)


def _anomalies(ev: EventTable) -> list[tuple[str, bool, int]]:
    return [
        (ev.metric[j], bool(ev.opened[j]), int(ev.at_ns[j]) // NS)
        for j in range(len(ev))
        if DETECTOR_NAMES[Detector(int(ev.detector[j]))] == "anomaly"
    ]


def test_t2_sees_a_shift_against_the_correlation_that_no_channel_shows() -> None:
    """The shift keeps every channel inside its own z-range: the per-metric detector (today's
    code: the multivariate score off) sees nothing; the device's T² opens at the shift."""
    v = _correlated()
    without = _anomalies(_replay(DetectionSettings(multivariate=False), v))
    assert without == []
    found = _anomalies(_replay(DetectionSettings(multivariate=True), v))
    opens = [(m, at) for m, o, at in found if o]
    assert opens, "T² missed the shift"
    assert opens[0][0] == MV_METRIC
    assert SHIFT_AT <= opens[0][1] <= SHIFT_AT + 5
    # nothing before the shift (no false alarm on the correlated normal running)
    assert all(at >= SHIFT_AT for _, _, at in found)


def test_a_small_lasting_shift_below_the_per_vector_noise_is_found() -> None:
    """Four independent channels (sd 1); channel 0 moves by 1.5 sd and stays. No single vector
    shows it (the median-of-three level the score used before scored T² about 5 against a
    quantile of 18.5, and missed it): the smoothed level does, within 40 vectors."""
    rng = np.random.default_rng(11)
    v = 10.0 + rng.standard_normal((1500, 4))
    v[SHIFT_AT:, 0] += 1.5
    found = _anomalies(_replay(DetectionSettings(), v))
    opens = [at for m, o, at in found if o and m == MV_METRIC]
    assert opens, "the smoothed T² missed a lasting 1.5-sd shift"
    assert SHIFT_AT <= opens[0] <= SHIFT_AT + 40
    assert all(at >= SHIFT_AT for _, _, at in found)


def test_a_lone_glitch_is_a_spike_not_an_anomaly() -> None:
    """One reading of one channel far off (20 to 1,000 of the channel's typical steps) is a
    sensor spike, a maintenance ticket; it never reaches the device's score (it did, and
    paged an anomaly for 30-70 vectors, when the smoothed level took every vector in)."""
    for size in (20.0, 100.0, 1000.0):
        v = _correlated()
        v[SHIFT_AT:, 2] += 4.5  # no fault
        v[1000, 1] += size
        ev = _replay(DetectionSettings(), v)
        names = [
            (ev.metric[j], DETECTOR_NAMES[Detector(int(ev.detector[j]))]) for j in range(len(ev))
        ]
        assert ("ch1_unknown", "spike") in names, names
        assert _anomalies(ev) == [], size


def test_t2_is_quiet_on_normal_running_and_takes_a_new_normal() -> None:
    """Correlated channels without a fault open nothing; a shift that stays becomes the new
    normal after generic_warmup_samples vectors open (then the event clears)."""
    v = _correlated()
    v[SHIFT_AT:, 2] += 4.5  # undo the fault
    assert _anomalies(_replay(DetectionSettings(multivariate=True), v)) == []
    v2 = _correlated(3000)
    found = _anomalies(_replay(DetectionSettings(multivariate=True), v2))
    cfg = DetectionSettings(multivariate=True)
    clears = [at for m, o, at in found if m == MV_METRIC and not o]
    assert clears
    assert SHIFT_AT + cfg.generic_warmup_samples <= clears[0]


def test_t2_does_not_depend_on_batch_cuts() -> None:
    """Replayed in one batch or cut in three, the same detections."""
    v = _correlated()
    one = _anomalies(_replay(DetectionSettings(multivariate=True), v))
    cut = _anomalies(_replay(DetectionSettings(multivariate=True), v, cuts=(100, 905)))
    assert one
    assert one == cut


def test_single_generic_metric_keeps_the_per_metric_detector() -> None:
    """A device with one generic metric has no vector: its anomaly is the per-metric one."""
    rng = np.random.default_rng(7)
    x = 50 + rng.standard_normal((3000, 1))
    x[1500:1600] -= 12
    found = _anomalies(_replay(DetectionSettings(multivariate=True), x))
    assert [(m, o) for m, o, _ in found][:1] == [("ch0_unknown", True)]


def test_chi2_quantile_closed_form() -> None:
    """The chi-square quantile against exact values (2 dof: -2 ln alpha; tables for 7 and 8)."""
    assert abs(float(chi2_upper(np.array([2.0]), 1e-3)[0]) - 13.816) < 1e-3
    assert abs(float(chi2_upper(np.array([7.0]), 1e-3)[0]) - 24.322) < 1e-2
    assert abs(float(chi2_upper(np.array([8.0]), 1e-4)[0]) - 31.828) < 1e-2
    assert abs(float(chi2_upper(np.array([8.0]), 1e-2)[0]) - 20.090) < 1e-2


def test_gas_streams_beside_a_generic_device_are_unchanged() -> None:
    """A leak monitor replayed in the same batches as a multichannel generic device gives the
    same detections with the multivariate score on and off; only the generic device differs."""
    rng = np.random.default_rng(9)
    n = 1500
    gas = 2.0 + 0.05 * rng.standard_normal(n)
    gas[1000:1100] += 3.0
    v = _correlated(n)

    def run(cfg: DetectionSettings) -> list[tuple[str, str, bool, int]]:
        engine = DetectionEngine(cfg)
        ids = [engine.register("plant/pump-1", f"ch{j}_unknown") for j in range(4)]
        leak = engine.register("site/well-7/ch4", "ch4_ppm")
        ts = np.arange(n, dtype=np.int64) * 10 * NS  # 10 s: the leak monitor arms after 1 h
        s = np.concatenate([np.repeat(np.asarray(ids, np.int64)[None, :], n, 0).ravel(),
                            np.full(n, leak, np.int64)])  # fmt: skip
        t = np.concatenate([np.repeat(ts, 4), ts])
        x = np.concatenate([v.ravel(), gas])
        ev = engine.process(s, t, x, np.ones(s.size, bool)).events
        return [
            (ev.device_id[j], DETECTOR_NAMES[Detector(int(ev.detector[j]))],
             bool(ev.opened[j]), int(ev.at_ns[j]) // NS)
            for j in range(len(ev))
        ]  # fmt: skip

    on, off = run(DetectionSettings(multivariate=True)), run(DetectionSettings(multivariate=False))
    gas_on = [e for e in on if e[0] == "site/well-7/ch4"]
    assert gas_on
    assert gas_on == [e for e in off if e[0] == "site/well-7/ch4"]
    assert any(e[0] == "plant/pump-1" for e in on)
    assert not any(e[0] == "plant/pump-1" and e[1] == "anomaly" for e in off)
