"""Injected events of a live simulation: a release past the alarm level, a dropout, a silence."""

from __future__ import annotations

import json

import pytest

from core.errors import ConfigurationError
from sensors_sim import EventKind, EventPlan, InjectedEvent, SimulationConfig, Simulator
from sensors_sim.events import FAULT_VALUE_PCT, RELEASE_RISE_PCT, SILENT_S
from wire.schemas import SourceKind

ROOT = "ghg/v1"
T0_S = 1_800_000_000.0
STEP_S = 0.5
EVERY_S = 20.0
# Alarm levels of the mine location classes are at most 2.5 % vol (drainage, T7).
HIGHEST_ALARM_PCT = 2.5


Started = list[tuple[float, InjectedEvent, str]]


def _run(cfg: SimulationConfig, seconds: float) -> tuple[list[tuple[float, str, float]], Started]:
    """(time, device id, ch4) of every mine reading sent, and the events started, in order."""
    sim = Simulator(cfg, ROOT)
    readings: list[tuple[float, str, float]] = []
    started: Started = []
    for k in range(int(seconds / STEP_S)):
        now = T0_S + k * STEP_S
        for msg in sim.due(now):
            if msg.kind is not SourceKind.MINE or msg.expected_reason is not None:
                continue
            body = json.loads(msg.payload)
            device = msg.topic.split("/")[-4:-1]
            readings.append((now, "/".join(device), body["readings"][0]["value"]))
        started += [(now, e, d) for e, d in sim.started_events(now)]
    return readings, started


def test_events_come_in_turn_and_act_on_their_devices() -> None:
    """A release lifts a mine sensor past every alarm level, a fault drops one below the
    plausible range, a silent device sends nothing for SILENT_S and then resumes; each kind
    on its own device, the first within FIRST_EVENT_S."""
    cfg = SimulationConfig(
        kinds=(SourceKind.MINE, SourceKind.LEAK),
        devices_per_kind=3,
        events_every_s=EVERY_S,
        progress=False,
    )
    readings, started = _run(cfg, SILENT_S + 4 * EVERY_S)
    kinds = [e.kind for _, e, _ in started]
    assert kinds[:3] == [EventKind.RELEASE, EventKind.SENSOR_FAULT, EventKind.SILENT_DEVICE]
    assert started[0][0] - T0_S <= EVERY_S
    by_kind = {e.kind: (e, d) for _, e, d in reversed(started)}  # the first of each kind
    assert len({d for _, d in by_kind.values()}) == 3

    release, rel_dev = by_kind[EventKind.RELEASE]
    during = [
        v for t, d, v in readings if d == rel_dev and release.start_s + 40 < t < release.end_s - 40
    ]
    before = [v for t, d, v in readings if d == rel_dev and t < release.start_s]
    assert during
    assert before
    assert min(during) >= HIGHEST_ALARM_PCT
    assert max(before) < min(during) - RELEASE_RISE_PCT / 2

    fault, fault_dev = by_kind[EventKind.SENSOR_FAULT]
    faulty = [v for t, d, v in readings if d == fault_dev and fault.start_s < t < fault.end_s]
    assert faulty
    assert all(v == FAULT_VALUE_PCT for v in faulty)

    silent, silent_dev = by_kind[EventKind.SILENT_DEVICE]
    times = [t for t, d, _ in readings if d == silent_dev]
    assert not [t for t in times if silent.start_s < t < silent.end_s]
    assert [t for t in times if t < silent.start_s]
    assert [t for t in times if t >= silent.end_s], "the silent device comes back"


def test_no_events_without_an_interval() -> None:
    """Without events_every_s nothing is injected: no event, no reading near the fault value."""
    cfg = SimulationConfig(kinds=(SourceKind.MINE,), devices_per_kind=3, progress=False)
    readings, started = _run(cfg, 4 * EVERY_S)
    assert not started
    assert readings
    assert all(0.0 <= v < HIGHEST_ALARM_PCT for _, _, v in readings)


def test_events_need_mine_sensors() -> None:
    """Events happen on mine sensors, so a simulation without them refuses the option."""
    with pytest.raises(ConfigurationError, match="mine"):
        SimulationConfig.from_cli(
            kinds="city",
            devices_per_kind=1,
            rate=None,
            duration_s=None,
            max_messages=None,
            batch=True,
            invalid_rate=0.0,
            seed=1,
            progress=False,
            events_every_s=10.0,
        )


def test_with_two_mine_devices_a_silence_never_hides_a_release() -> None:
    """With fewer devices than kinds of events, the silent device is not the release's."""
    plan = EventPlan(EVERY_S, mine_devices=2)
    plan.started(T0_S)
    events = [e for k in range(1, 40) for e in plan.started(T0_S + k * EVERY_S)]
    release = {e.device for e in events if e.kind is EventKind.RELEASE}
    silent = {e.device for e in events if e.kind is EventKind.SILENT_DEVICE}
    assert release
    assert silent
    assert not release & silent
