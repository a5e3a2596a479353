"""Occasional injected events in a live simulation, so a newcomer sees alerts happen.

``ghgwatch up --simulate`` turns this on (``SimulationConfig.events_every_s``). Every
``events_every_s`` one event starts, in turn (the first after ``min(FIRST_EVENT_S,
events_every_s)``), each on a mine methane sensor. Each kind of event has its own devices
(device index modulo 3, taken in turn; with fewer than three mine devices they share, and a
silent device then hides the events on it):

- ``release``: methane rises by ``RELEASE_RISE_PCT`` % vol over ``RELEASE_RAMP_S``, holds, and
  falls back (the step/ramp release shape of :mod:`sensors_sim.scenarios`). The rise takes
  every location class past its alarm level (AQ 1029: at most 2.5 % vol at drainage), so the
  detector raises ``threshold_alarm`` at the crossing reading: a critical alert at once, with
  no baseline to learn first;
- ``sensor_fault``: the sensor drops out to ``FAULT_VALUE_PCT`` % vol (the dropout fault of
  the scenarios), below the plausible range: ``out_of_range``, a maintenance ticket for the
  device, immediately;
- ``silent_device``: the device publishes nothing for ``SILENT_S`` (at most 1.5 intervals)
  and then comes back. Today
  the gap detector reports the gap when data resumes (a maintenance ticket, once the stream's
  interval is learned); a wall-clock ``no_data`` alert while it is silent comes with the
  liveness check (issue 13, item 3).

Pure like :class:`sensors_sim.simulator.Simulator`: times are passed in, nothing reads the
clock, so the same plan gives the same events for the same start time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sensors_sim.arrays import BoolArray, FloatArray, IntArray

__all__ = [
    "FAULT_S",
    "FAULT_VALUE_PCT",
    "FIRST_EVENT_S",
    "RELEASE_HOLD_S",
    "RELEASE_RAMP_S",
    "RELEASE_RISE_PCT",
    "SILENT_S",
    "EventKind",
    "EventPlan",
    "InjectedEvent",
]

# The first event starts this soon after the simulation (or sooner with a shorter interval).
FIRST_EVENT_S = 60.0
# Rise above the sensor's own reading: past the highest alarm level of any location (2.5 %).
RELEASE_RISE_PCT = 2.5
RELEASE_RAMP_S = 30.0
RELEASE_HOLD_S = 120.0
# A dropout below the plausible floor of ch4_pct_vol (-0.1 % vol), as the scenarios' dropout.
FAULT_VALUE_PCT = -0.5
# Long enough for at least two readings at the slowest mine interval (10 s).
FAULT_S = 30.0
# Longer than the gap limit (detection.gap_s, 300 s), so resuming is a gap.
SILENT_S = 420.0


class EventKind(StrEnum):
    """What an injected event does to its device."""

    RELEASE = "release"
    SENSOR_FAULT = "sensor_fault"
    SILENT_DEVICE = "silent_device"


_ORDER = (EventKind.RELEASE, EventKind.SENSOR_FAULT, EventKind.SILENT_DEVICE)
_DURATION_S = {
    EventKind.RELEASE: 2 * RELEASE_RAMP_S + RELEASE_HOLD_S,
    EventKind.SENSOR_FAULT: FAULT_S,
    EventKind.SILENT_DEVICE: SILENT_S,
}


@dataclass(frozen=True, slots=True)
class InjectedEvent:
    """One injected event.

    Attributes:
        number: its sequence number (0 first).
        kind: what it does.
        device: index of the mine device in its fleet.
        start_s: when it starts (epoch seconds).
        end_s: when it is over.
    """

    number: int
    kind: EventKind
    device: int
    start_s: float
    end_s: float

    def release_rise(self, t_s: FloatArray) -> FloatArray:
        """Methane added at reading times ``t_s`` (% vol): ramp up, hold, ramp down."""
        up = np.clip((t_s - self.start_s) / RELEASE_RAMP_S, 0.0, 1.0)
        down = np.clip((self.end_s - t_s) / RELEASE_RAMP_S, 0.0, 1.0)
        return np.asarray(RELEASE_RISE_PCT * np.minimum(up, down), np.float64)


class EventPlan:
    """When each event starts and which mine device it hits.

    Args:
        every_s: one event starts every this many seconds.
        mine_devices: devices of the simulated mine fleet (events need at least one).
    """

    def __init__(self, every_s: float, mine_devices: int) -> None:
        if every_s <= 0 or mine_devices < 1:
            raise ValueError("events need a positive interval and at least one mine device")
        self._every_s = every_s
        self._devices = mine_devices
        self._first_s = min(FIRST_EVENT_S, every_s)
        self._origin_s: float | None = None
        self._announced = 0

    def _event(self, number: int) -> InjectedEvent:
        assert self._origin_s is not None
        kind = _ORDER[number % len(_ORDER)]
        # Each kind has its own devices (index modulo 3) and walks them in turn, so a silent
        # device never hides a release or a fault when there are three devices or more; with
        # fewer, the last device is shared (silence hides a fault before it hides a release).
        role = _ORDER.index(kind)
        own = list(range(role, self._devices, len(_ORDER))) or [self._devices - 1]
        device = own[(number // len(_ORDER)) % len(own)]
        start = self._origin_s + self._first_s + number * self._every_s
        duration = _DURATION_S[kind]
        if kind is EventKind.SILENT_DEVICE:
            # Back well before the next silence starts, so a short interval cannot keep a
            # device silent for good.
            duration = min(duration, 0.5 * len(_ORDER) * self._every_s)
        return InjectedEvent(number, kind, device, start, start + duration)

    def _active(self, now_s: float) -> list[InjectedEvent]:
        """Events running at ``now_s`` (the plan starts at the first time it is asked)."""
        if self._origin_s is None:
            self._origin_s = now_s
        elapsed = now_s - self._origin_s - self._first_s
        if elapsed < 0:
            return []
        last = int(elapsed // self._every_s)
        longest = max(_DURATION_S.values())
        first = max(0, last - math.ceil(longest / self._every_s))
        events = [self._event(n) for n in range(first, last + 1)]
        return [e for e in events if e.start_s <= now_s < e.end_s]

    def started(self, now_s: float) -> list[InjectedEvent]:
        """Events that started since the previous call (each is returned once)."""
        out = [e for e in self._active(now_s) if e.number >= self._announced]
        if out:
            self._announced = max(e.number for e in out) + 1
        return sorted(out, key=lambda e: e.number)

    def silent(self, idx: IntArray, now_s: float) -> BoolArray:
        """Which of the mine devices ``idx`` are silent at ``now_s``."""
        quiet = {e.device for e in self._active(now_s) if e.kind is EventKind.SILENT_DEVICE}
        return np.isin(idx, list(quiet))

    def apply(
        self,
        now_s: float,
        idx: IntArray,
        t_s: FloatArray,
        ch4: FloatArray,
        calibrating: BoolArray,
    ) -> None:
        """Change the methane of the mine devices ``idx`` read at ``t_s``, in place.

        Args:
            now_s: the current time (epoch seconds): the events running then act.
            idx: mine device indices, one per row.
            t_s: reading time of each row (epoch seconds).
            ch4: ``ch4_pct_vol`` of each row (% vol), changed in place.
            calibrating: calibration flag of each row; cleared where an event acts, so the
                event is not hidden as calibration gas.
        """
        for e in self._active(now_s):
            rows = (idx == e.device) & (t_s >= e.start_s) & (t_s < e.end_s)
            if not rows.any():
                continue
            if e.kind is EventKind.RELEASE:
                ch4[rows] += e.release_rise(t_s[rows])
            elif e.kind is EventKind.SENSOR_FAULT:
                ch4[rows] = FAULT_VALUE_PCT
            else:
                continue
            calibrating[rows] = False
