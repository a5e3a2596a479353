"""Columnar outputs of the engine: detection events and derived series, as numpy columns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["NEVER_NS", "DerivedTable", "EventTable", "concat_derived", "concat_events"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

NEVER_NS = int(np.iinfo(np.int64).min)


@dataclass(frozen=True, slots=True)
class EventTable:
    """Detection transitions, one row each, ordered by the reading time they were seen at.

    ``opened`` rows are onsets (``ended_ns`` is ``NEVER_NS`` unless the event is instantaneous,
    e.g. a gap or a spike); the other rows clear an earlier onset with the same
    ``started_ns``, so ``(device_id, metric, detector, started_ns)`` identifies an event.
    """

    device_id: list[str]
    metric: list[str]
    detector: npt.NDArray[np.int16]
    opened: BOOL
    at_ns: I64
    started_ns: I64
    ended_ns: I64
    value: F64
    score: F64
    threshold: F64
    baseline: F64
    sigma: F64

    def __len__(self) -> int:
        return len(self.device_id)

    @staticmethod
    def empty() -> EventTable:
        """A table with no rows."""
        f = np.empty(0, np.float64)
        i = np.empty(0, np.int64)
        return EventTable([], [], np.empty(0, np.int16), np.empty(0, bool), i, i, i, f, f, f, f, f)

    def sorted(self) -> EventTable:
        """Rows in (reading time, device, metric, detector, clear before open) order."""
        if len(self) < 2:
            return self
        dev = np.asarray(self.device_id, dtype=object)
        met = np.asarray(self.metric, dtype=object)
        keys = [f"{d}\x00{m}" for d, m in zip(dev, met, strict=True)]
        _, key_rank = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
        order = np.lexsort((self.opened, self.detector, key_rank, self.at_ns))
        return self.take(order)

    def take(self, idx: npt.NDArray[np.intp] | I64) -> EventTable:
        """The rows at ``idx``."""
        return EventTable(
            [self.device_id[i] for i in idx],
            [self.metric[i] for i in idx],
            self.detector[idx],
            self.opened[idx],
            self.at_ns[idx],
            self.started_ns[idx],
            self.ended_ns[idx],
            self.value[idx],
            self.score[idx],
            self.threshold[idx],
            self.baseline[idx],
            self.sigma[idx],
        )


@dataclass(frozen=True, slots=True)
class DerivedTable:
    """Derived series points: emission rates, enhancements, validity."""

    device_id: list[str]
    series: list[str]
    ts_ns: I64
    value: F64
    valid: BOOL = field(default_factory=lambda: np.empty(0, bool))

    def __len__(self) -> int:
        return len(self.device_id)

    @staticmethod
    def empty() -> DerivedTable:
        """A table with no rows."""
        return DerivedTable([], [], np.empty(0, np.int64), np.empty(0), np.empty(0, bool))


def concat_events(parts: list[EventTable]) -> EventTable:
    """Concatenate event tables."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return EventTable.empty()
    if len(parts) == 1:
        return parts[0]
    return EventTable(
        [d for p in parts for d in p.device_id],
        [m for p in parts for m in p.metric],
        np.concatenate([p.detector for p in parts]),
        np.concatenate([p.opened for p in parts]),
        np.concatenate([p.at_ns for p in parts]),
        np.concatenate([p.started_ns for p in parts]),
        np.concatenate([p.ended_ns for p in parts]),
        np.concatenate([p.value for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.threshold for p in parts]),
        np.concatenate([p.baseline for p in parts]),
        np.concatenate([p.sigma for p in parts]),
    )


def concat_derived(parts: list[DerivedTable]) -> DerivedTable:
    """Concatenate derived-series tables."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return DerivedTable.empty()
    if len(parts) == 1:
        return parts[0]
    return DerivedTable(
        [d for p in parts for d in p.device_id],
        [s for p in parts for s in p.series],
        np.concatenate([p.ts_ns for p in parts]),
        np.concatenate([p.value for p in parts]),
        np.concatenate([p.valid for p in parts]),
    )
