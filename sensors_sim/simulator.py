"""The simulation plan and its bookkeeping: configuration, counters, and the message generator.

:class:`Simulator` is pure: given the wall-clock time it returns the messages due (each
device's natural interval) or the next ``budget`` messages (a target rate, devices taken in a
fixed shuffled round-robin). It keeps every device's readings unique by (device, metric, ts)
and its timestamps increasing. Publishing is :mod:`sensors_sim.runner`'s job.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ConfigurationError
from sensors_sim.arrays import IntArray
from sensors_sim.events import EventPlan, InjectedEvent
from sensors_sim.payloads import (
    SimMessage,
    encode_block,
    malform,
    malformations_for,
)
from sensors_sim.profiles import Fleet, build_fleet
from sensors_sim.signals import SignalModel
from wire.schemas import RejectReason, SourceKind

__all__ = [
    "KindCounts",
    "SimulationConfig",
    "SimulationStats",
    "Simulator",
]

MIN_TS_STEP_US = 1_000  # a device never repeats a timestamp; 1 ms apart at the very least
US_PER_S = 1_000_000


class SimulationConfig(BaseModel):
    """What to simulate and when to stop.

    Attributes:
        kinds: source kinds to simulate.
        devices_per_kind: devices of each kind.
        rate: total messages/s target (token bucket); ``inf`` means as fast as the broker
            acknowledges; None means each device at its natural interval.
        duration_s: stop after this long (None: no limit).
        max_messages: stop after this many messages (None: no limit).
        batch: send each device's channels (and samples) as one batch message.
        samples_per_message: consecutive samples per channel in one message (store-and-forward
            loggers); > 1 needs ``batch``.
        sample_interval_s: spacing of those samples; None: the device's natural interval.
        invalid_rate: fraction of messages malformed on purpose.
        jitter_s: devices' measurement times precede the publish by up to this.
        seed: random seed (fleet and values are reproducible for a seed).
        progress: show a live progress display.
        max_inflight: unacknowledged QoS 1 publishes allowed.
        qos: MQTT QoS of the publishes.
        client_id: MQTT client id (None: a unique one).
        shard_index: which share of the devices this simulator publishes for.
        shard_count: how many simulators share the devices (several publisher processes).
        events_every_s: inject a release, a sensor fault or a silent device on a mine sensor
            every this many seconds, in turn (:mod:`sensors_sim.events`; needs ``mine`` in
            ``kinds``); None: no events.
    """

    # inf (as fast as possible) must survive a JSON round trip to publisher processes.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    kinds: tuple[SourceKind, ...] = tuple(SourceKind)
    devices_per_kind: int = Field(default=5, ge=1, le=1_000_000)
    rate: float | None = Field(default=None, gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    max_messages: int | None = Field(default=None, ge=0)
    batch: bool = True
    samples_per_message: int = Field(default=1, ge=1, le=10_000)
    sample_interval_s: float | None = Field(default=None, gt=0)
    invalid_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    jitter_s: float = Field(default=0.5, ge=0.0, le=60.0)
    seed: int = 1
    progress: bool = True
    max_inflight: int = Field(default=1000, ge=1, le=60_000)
    qos: int = Field(default=1, ge=0, le=1)
    client_id: str | None = None
    shard_index: int = Field(default=0, ge=0)
    shard_count: int = Field(default=1, ge=1)
    events_every_s: float | None = Field(default=None, gt=0)

    @field_validator("kinds")
    @classmethod
    def _some_kinds(cls, value: tuple[SourceKind, ...]) -> tuple[SourceKind, ...]:
        if not value:
            raise ValueError("at least one kind")
        return tuple(dict.fromkeys(value))

    def model_post_init(self, _context: object) -> None:
        """Reject combinations that cannot work."""
        if self.samples_per_message > 1 and not self.batch:
            raise ValueError("samples_per_message > 1 needs batch messages")
        if self.shard_index >= self.shard_count:
            raise ValueError("shard_index must be below shard_count")
        if self.events_every_s is not None and SourceKind.MINE not in self.kinds:
            raise ValueError("injected events happen on mine sensors: add the mine kind")

    @classmethod
    def from_cli(
        cls,
        *,
        kinds: str,
        devices_per_kind: int,
        rate: float | None,
        duration_s: float | None,
        max_messages: int | None,
        batch: bool,
        invalid_rate: float,
        seed: int,
        progress: bool,
        samples_per_message: int = 1,
        events_every_s: float | None = None,
    ) -> SimulationConfig:
        """Build the configuration from the ``ghgwatch simulate`` options.

        Args:
            kinds: comma-separated kinds, e.g. ``"city,cems,mine,leak"``.
            devices_per_kind: devices of each kind.
            rate: total messages/s, or None for natural intervals.
            duration_s: stop after this long.
            max_messages: stop after this many messages.
            batch: one batch message per device tick.
            invalid_rate: fraction of malformed messages.
            seed: random seed.
            progress: live progress display.
            samples_per_message: consecutive samples per channel in one batch message.
            events_every_s: inject an event every this many seconds (None: none).

        Raises:
            ConfigurationError: an unknown kind or an impossible combination.
        """
        names = [k.strip().lower() for k in kinds.split(",") if k.strip()]
        known = {k.value for k in SourceKind}
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise ConfigurationError(
                f"unknown kinds {unknown or kinds!r}; choose from {', '.join(sorted(known))}"
            )
        try:
            return cls(
                kinds=tuple(SourceKind(n) for n in names),
                devices_per_kind=devices_per_kind,
                rate=rate,
                duration_s=duration_s,
                max_messages=max_messages,
                batch=batch,
                samples_per_message=samples_per_message,
                invalid_rate=invalid_rate,
                seed=seed,
                progress=progress,
                events_every_s=events_every_s,
            )
        except ValueError as exc:
            raise ConfigurationError(f"simulation options: {exc}") from exc


@dataclass(slots=True)
class KindCounts:
    """Messages and readings sent for one source kind."""

    messages: int = 0
    readings: int = 0
    invalid: int = 0


@dataclass(slots=True)
class SimulationStats:
    """What a simulation sent, counted as messages are handed to the broker.

    Attributes:
        elapsed_s: wall time of the publishing loop.
        messages: messages published.
        acked: messages the broker acknowledged.
        valid_messages: messages the bridge must accept.
        invalid_messages: messages malformed on purpose.
        valid_readings: readings inside the valid messages (what must get stored).
        by_kind: counts per source kind.
        by_reason: malformed messages per reject reason the bridge must give.
        events: injected events started (``SimulationConfig.events_every_s``).
    """

    elapsed_s: float = 0.0
    messages: int = 0
    acked: int = 0
    valid_messages: int = 0
    invalid_messages: int = 0
    valid_readings: int = 0
    by_kind: dict[SourceKind, KindCounts] = field(default_factory=dict)
    by_reason: Counter[RejectReason] = field(default_factory=Counter)
    events: int = 0

    def record(self, msg: SimMessage) -> None:
        """Count one published message."""
        self.messages += 1
        counts = self.by_kind.get(msg.kind)
        if counts is None:
            counts = self.by_kind[msg.kind] = KindCounts()
        counts.messages += 1
        reason = msg.expected_reason
        if reason is None:
            self.valid_messages += 1
            self.valid_readings += msg.readings
            counts.readings += msg.readings
        else:
            self.invalid_messages += 1
            counts.invalid += 1
            self.by_reason[reason] += 1

    @property
    def messages_per_s(self) -> float:
        """Mean publish rate."""
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """A few human-readable lines for the CLI."""
        lines = [
            f"sent {self.messages} messages in {self.elapsed_s:.1f} s "
            f"({self.messages_per_s:,.0f}/s), acked {self.acked}",
            f"valid {self.valid_messages} messages carrying {self.valid_readings} readings; "
            f"invalid {self.invalid_messages}",
        ]
        for kind, c in sorted(self.by_kind.items()):
            lines.append(
                f"  {kind.value:<5} {c.messages:>9} messages {c.readings:>10} readings "
                f"{c.invalid:>7} invalid"
            )
        if self.by_reason:
            lines.append(
                "  expected rejects: "
                + ", ".join(f"{r.value}={n}" for r, n in sorted(self.by_reason.items()))
            )
        return "\n".join(lines)


class Simulator:
    """Generate the messages of every simulated device; pure apart from its random state.

    Args:
        cfg: the simulation configuration.
        root: MQTT topic root, e.g. ``ghg/v1``.
    """

    def __init__(self, cfg: SimulationConfig, root: str) -> None:
        self._cfg = cfg
        self._rng = np.random.default_rng(cfg.seed)
        self._fleets: list[Fleet] = [
            build_fleet(kind, cfg.devices_per_kind, self._rng) for kind in cfg.kinds
        ]
        self._models = [SignalModel(f, self._rng) for f in self._fleets]
        self._topics = [f.topics(root) for f in self._fleets]
        self._last_us = [np.full(f.size, np.iinfo(np.int64).min // 2) for f in self._fleets]
        self._next_due: list[npt.NDArray[np.float64]] | None = None
        # Rate mode: one shuffled round-robin over every device of every kind (of this shard).
        owner = np.concatenate([np.full(f.size, i) for i, f in enumerate(self._fleets)])
        device = np.concatenate([np.arange(f.size) for f in self._fleets])
        mine = np.arange(len(owner)) % cfg.shard_count == cfg.shard_index
        self._owned = [mine[owner == i] for i in range(len(self._fleets))]
        owner, device = owner[mine], device[mine]
        order = self._rng.permutation(len(owner))
        self._rr_fleet = owner[order]
        self._rr_device = device[order]
        per_tick = np.array(
            [1 if cfg.batch else len(f.channels) * cfg.samples_per_message for f in self._fleets]
        )
        self._rr_msgs = per_tick[self._rr_fleet]
        self._rr_pos = 0
        self._mine = next(
            (i for i, f in enumerate(self._fleets) if f.kind is SourceKind.MINE), None
        )
        self._events: EventPlan | None = None
        if cfg.events_every_s is not None and self._mine is not None:
            self._events = EventPlan(cfg.events_every_s, self._fleets[self._mine].size)

    @property
    def fleets(self) -> tuple[Fleet, ...]:
        """The simulated fleets, one per kind."""
        return tuple(self._fleets)

    @property
    def device_count(self) -> int:
        """Devices this simulator publishes for, across all kinds."""
        return len(self._rr_fleet)

    def _period_s(self, fleet_i: int) -> npt.NDArray[np.float64]:
        fleet = self._fleets[fleet_i]
        spacing = self._cfg.sample_interval_s
        base = fleet.interval_s if spacing is None else np.full(fleet.size, spacing)
        return base * self._cfg.samples_per_message

    def next_due_s(self) -> float:
        """The earliest time a device is due (natural-interval mode); -inf before the first call."""
        if self._next_due is None:
            return -math.inf
        return float(min(d.min() for d in self._next_due))

    def due(self, now_s: float) -> list[SimMessage]:
        """Messages of every device whose natural interval has come round by ``now_s``."""
        if self._next_due is None:
            # Spread the first readings over one interval, like devices switched on at random.
            self._next_due = [
                np.where(
                    self._owned[i],
                    now_s + self._rng.uniform(0.0, 1.0, f.size) * self._period_s(i),
                    math.inf,  # another shard's device
                )
                for i, f in enumerate(self._fleets)
            ]
        out: list[SimMessage] = []
        for i, due_at in enumerate(self._next_due):
            idx = np.flatnonzero(due_at <= now_s)
            if idx.size == 0:
                continue
            period = self._period_s(i)[idx]
            nxt = due_at[idx] + period
            # A device that fell more than a period behind skips ahead rather than bursting.
            due_at[idx] = np.where(nxt < now_s, now_s + period, nxt)
            out.extend(self._emit(i, idx, now_s))
        return out

    def take(self, now_s: float, budget: int) -> list[SimMessage]:
        """About ``budget`` messages (whole device ticks) from the round-robin, each device once.

        Args:
            now_s: the current wall-clock time (epoch seconds).
            budget: messages wanted; at most one round of all devices is returned.
        """
        if budget <= 0:
            return []
        n = len(self._rr_fleet)
        pos = (self._rr_pos + np.arange(n)) % n
        cum = np.cumsum(self._rr_msgs[pos])
        count = min(int(np.searchsorted(cum, budget)) + 1, n)
        chosen = pos[:count]
        self._rr_pos = int((self._rr_pos + count) % n)
        out: list[SimMessage] = []
        fleets = self._rr_fleet[chosen]
        devices = self._rr_device[chosen]
        for i in np.unique(fleets):
            out.extend(self._emit(int(i), np.sort(devices[fleets == i]), now_s))
        return out

    def started_events(self, now_s: float) -> list[tuple[InjectedEvent, str]]:
        """Injected events that started since the previous call, with their device ids."""
        if self._events is None or self._mine is None:
            return []
        refs = self._fleets[self._mine].refs
        return [(e, refs[e.device].device_id) for e in self._events.started(now_s)]

    def _emit(self, fleet_i: int, idx: IntArray, now_s: float) -> list[SimMessage]:
        cfg = self._cfg
        fleet = self._fleets[fleet_i]
        model = self._models[fleet_i]
        events = self._events if fleet_i == self._mine else None
        if events is not None:
            # A silent device sends nothing; its clock simply resumes when it is back.
            idx = idx[~events.silent(idx, now_s)]
            if idx.size == 0:
                return []
        k, samples = len(idx), cfg.samples_per_message
        spacing_s = (
            fleet.interval_s[idx]
            if cfg.sample_interval_s is None
            else np.full(k, cfg.sample_interval_s)
        )
        spacing_us = np.maximum((spacing_s * US_PER_S).astype(np.int64), MIN_TS_STEP_US)
        jitter_us = (self._rng.uniform(0.0, cfg.jitter_s, k) * US_PER_S).astype(np.int64)
        last = self._last_us[fleet_i][idx]
        # Every sample strictly after the device's previous one, so (device, metric, ts) stays
        # unique; a device polled faster than its sample window squeezes the spacing rather
        # than running ahead of the clock.
        newest = np.maximum(
            np.int64(int(now_s * US_PER_S)) - jitter_us, last + samples * MIN_TS_STEP_US
        )
        spacing_us = np.minimum(spacing_us, (newest - last) // samples)
        self._last_us[fleet_i][idx] = newest
        ts_us = newest[:, None] - (samples - 1 - np.arange(samples))[None, :] * spacing_us[:, None]
        values = np.empty((k, samples, len(fleet.channels)))
        calibrating = np.empty((k, samples), dtype=np.bool_)
        for s in range(samples):
            sample = model.sample(idx, ts_us[:, s] / US_PER_S)
            values[:, s, :] = sample.values
            calibrating[:, s] = sample.calibrating
            if events is not None:
                # ch4_pct_vol is a mine sensor's one channel (profiles.CHANNELS)
                events.apply(now_s, idx, ts_us[:, s] / US_PER_S, values[:, s, 0], calibrating[:, s])
        messages = encode_block(
            fleet, self._topics[fleet_i], idx, ts_us, values, calibrating, batch=cfg.batch
        )
        if cfg.invalid_rate > 0:
            bad = np.flatnonzero(self._rng.random(len(messages)) < cfg.invalid_rate)
            if bad.size:
                options = malformations_for(fleet.kind)
                picks = self._rng.integers(0, len(options), bad.size)
                for j, p in zip(bad.tolist(), picks.tolist(), strict=True):
                    messages[j] = malform(messages[j], options[p])
        return messages
