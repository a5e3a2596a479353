"""Simulated payloads meet the wire contract, and malformed ones fail it for the stated reason."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from sensors_sim import EXPECTED_REASON, Malformation, SimulationConfig, Simulator, malform
from wire import AcceptedMessage, Flag, RejectedMessage, SourceKind, validate_message

ROOT = "ghg/v1"


def _messages(**kw: object) -> list:
    sim = Simulator(SimulationConfig(progress=False, **kw), ROOT)
    now = time.time()
    out = []
    for tick in range(5):
        out.extend(sim.take(now - 10.0 + tick, 10_000))
    return out


@pytest.mark.parametrize(
    ("batch", "samples"), [(False, 1), (True, 1), (True, 4)], ids=["single", "batch", "samples"]
)
def test_valid_messages_are_accepted_with_every_reading(batch: bool, samples: int) -> None:
    """Every valid simulated message passes validation and carries the readings counted."""
    msgs = _messages(
        devices_per_kind=30, batch=batch, samples_per_message=samples, sample_interval_s=1.0
    )
    assert {m.kind for m in msgs} == set(SourceKind)
    received = datetime.now(UTC)
    for m in msgs:
        assert m.valid
        result = validate_message(m.topic, m.payload, received, root=ROOT)
        assert isinstance(result, AcceptedMessage), (m.topic, m.payload[:200])
        assert len(result.record.readings) == m.readings
        for r in result.record.readings:
            assert r.ts.tzinfo is not None
            assert r.ts.utcoffset().total_seconds() == 0
            assert r.ts <= received


@pytest.mark.parametrize("how", list(Malformation))
@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_each_malformation_is_rejected_with_its_reason(how: Malformation, batch: bool) -> None:
    """Each kind of malformed message is rejected with the reason the simulator expects."""
    kinds = (SourceKind.MINE,) if how is Malformation.MISSING_LOCATION else tuple(SourceKind)
    msgs = _messages(kinds=kinds, devices_per_kind=3, batch=batch)
    received = datetime.now(UTC)
    for m in msgs[:40]:
        bad = malform(m, how)
        assert bad.expected_reason is EXPECTED_REASON[how]
        result = validate_message(bad.topic, bad.payload, received, root=ROOT)
        assert isinstance(result, RejectedMessage), bad.payload
        assert result.record.reason is EXPECTED_REASON[how], result.record.detail


def test_invalid_rate_malforms_that_fraction_in_several_ways() -> None:
    """About invalid_rate of the messages are malformed, in every way, each as expected."""
    msgs = _messages(devices_per_kind=100, batch=False, invalid_rate=0.1, seed=5)
    invalid = [m for m in msgs if not m.valid]
    assert 0.08 < len(invalid) / len(msgs) < 0.12
    assert {m.malformation for m in invalid} == set(Malformation)
    received = datetime.now(UTC)
    for m in msgs:
        result = validate_message(m.topic, m.payload, received, root=ROOT)
        got = result.record.reason if isinstance(result, RejectedMessage) else None
        assert got is m.expected_reason


def test_readings_are_unique_per_device_metric_and_time() -> None:
    """A device never repeats (metric, ts), even when polled faster than its interval."""
    sim = Simulator(SimulationConfig(devices_per_kind=4, batch=False, progress=False), ROOT)
    now = time.time()
    seen: Counter[tuple[str, str, datetime]] = Counter()
    received = datetime.now(UTC)
    for i in range(50):
        for m in sim.take(now + i * 0.0001, 10_000):
            result = validate_message(m.topic, m.payload, received, root=ROOT)
            assert isinstance(result, AcceptedMessage)
            rec = result.record
            for r in rec.readings:
                seen[(rec.device_id, r.metric, r.ts)] += 1
    assert max(seen.values()) == 1


def test_natural_intervals_pace_each_device() -> None:
    """Without a rate each device reports about once per natural interval."""
    sim = Simulator(SimulationConfig(kinds=(SourceKind.MINE,), devices_per_kind=20), ROOT)
    t0 = time.time()
    counts: Counter[str] = Counter()
    for step in range(0, 601):
        for m in sim.due(t0 + step * 0.1):
            counts[m.topic] += 1
    interval = dict(zip(sim.fleets[0].topics(ROOT), sim.fleets[0].interval_s, strict=True))
    for topic, n in counts.items():
        assert abs(n - 60.0 / interval[topic]) <= 1.0


def test_calibrating_channels_are_flagged_c() -> None:
    """Readings taken during a calibration run carry the HJ 212 flag C."""
    sim = Simulator(SimulationConfig(kinds=(SourceKind.CEMS,), devices_per_kind=10), ROOT)
    t0 = time.time()
    flags: Counter[Flag] = Counter()
    received = datetime.fromtimestamp(t0 + 2 * 86_400, UTC)
    for step in range(0, 2 * 24 * 60):
        for m in sim.take(t0 + step * 60.0, 10_000):
            result = validate_message(m.topic, m.payload, received, root=ROOT)
            assert isinstance(result, AcceptedMessage)
            for r in result.record.readings:
                flags[r.flag] += 1
                if r.flag is Flag.CALIBRATION:
                    assert r.metric in {"co2_pct_vol", "o2_pct_vol"}
    assert flags[Flag.CALIBRATION] > 0
    assert flags[Flag.NORMAL] > 10 * flags[Flag.CALIBRATION]


def test_shards_split_the_devices_without_overlap() -> None:
    """Simulators with different shard indices publish for disjoint sets of devices."""
    topics = []
    for index in range(3):
        cfg = SimulationConfig(devices_per_kind=30, shard_index=index, shard_count=3)
        sim = Simulator(cfg, ROOT)
        now = time.time()
        got = {m.topic for m in sim.take(now, 100_000)} | {m.topic for m in sim.due(now)}
        got |= {m.topic for m in sim.due(now + 120.0)}
        topics.append(got)
    assert not (topics[0] & topics[1])
    assert not (topics[1] & topics[2])
    assert sum(len(t) for t in topics) == 4 * 30


def test_config_survives_a_json_round_trip_with_an_unlimited_rate() -> None:
    """A config sent to a publisher process as JSON keeps rate=inf (as fast as possible)."""
    cfg = SimulationConfig(rate=float("inf"), shard_index=1, shard_count=2)
    again = SimulationConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
