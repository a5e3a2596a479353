"""Turn engine event tables into DetectionRecords, the same way for the live service and replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from processors.detection.catalogue import (
    DETECTOR_NAMES,
    DETECTOR_SEVERITY,
    KIND_NAMES,
    Detector,
    Kind,
)
from processors.detection.streams import StreamTable
from processors.detection.tables import NEVER_NS, EventTable
from wire.events import DetectionRecord, DetectionState, Severity, detection_id

__all__ = ["ns_to_datetime", "to_records"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_to_datetime(ns: int) -> datetime:
    """Epoch nanoseconds to an aware UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def to_records(events: EventTable, streams: StreamTable) -> list[DetectionRecord]:
    """DetectionRecords for event rows, in the table's order.

    Each row gives one record; an instantaneous event (gap, spike, invalid hour, mass-rate
    step) gives an OPEN record and its CLEARED record, so consumers see every event end.

    The ``detection_id`` depends only on (device, metric, detector, onset time), so an onset
    and its clearing share it, and replay and the live service agree on it.

    Args:
        events: the engine's events.
        streams: the registry, for each device's kind and location.

    Returns:
        The records.
    """
    dev_info: dict[str, tuple[Kind, str | None]] = {}
    for info in streams.infos:
        dev_info.setdefault(info.device_id, (info.kind, info.location))
    out: list[DetectionRecord] = []
    for j in range(len(events)):
        dev = events.device_id[j]
        metric = events.metric[j]
        det = Detector(int(events.detector[j]))
        name = DETECTOR_NAMES[det]
        sid = streams.get(dev, metric)
        if sid is not None:
            kind, location = streams.infos[sid].kind, streams.infos[sid].location
        else:
            kind, location = dev_info.get(dev, (Kind.GENERIC, None))
        started = ns_to_datetime(int(events.started_ns[j]))
        ended_ns = int(events.ended_ns[j])
        parts = dev.split("/")
        network, site = (parts[0], parts[1]) if len(parts) >= 3 else ("", "")
        evidence = {
            k: float(v)
            for k, v in (("baseline", events.baseline[j]), ("sigma", events.sigma[j]))
            if np.isfinite(v)
        }
        instant = bool(events.opened[j]) and ended_ns != NEVER_NS
        rec = DetectionRecord(
            detection_id=detection_id(dev, metric, name, started),
            state=DetectionState.OPEN if events.opened[j] else DetectionState.CLEARED,
            device_id=dev,
            kind=KIND_NAMES[kind],
            network=network,
            site=site,
            metric=metric,
            detector=name,
            severity=Severity(DETECTOR_SEVERITY[det]),
            started_at=started,
            ended_at=None if ended_ns == NEVER_NS or instant else ns_to_datetime(ended_ns),
            score=float(events.score[j]) if np.isfinite(events.score[j]) else 0.0,
            value=float(events.value[j]) if np.isfinite(events.value[j]) else 0.0,
            threshold=_finite(float(events.threshold[j])),
            location=location,
            evidence=evidence,
        )
        out.append(rec)
        if instant:
            # an event with no duration (gap, spike, invalid hour) opens and clears at once
            out.append(
                rec.model_copy(
                    update={"state": DetectionState.CLEARED, "ended_at": ns_to_datetime(ended_ns)}
                )
            )
    return out
