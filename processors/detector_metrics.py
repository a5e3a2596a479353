"""Prometheus series of the detector, in a registry of its own (``ghgwatch_detector``)."""

from __future__ import annotations

from collections.abc import Iterable

from adapters import BATCH_SECONDS_BUCKETS_S, ServiceMetrics
from wire.events import DetectionRecord

__all__ = ["DetectorMetrics"]


class DetectorMetrics(ServiceMetrics):
    """The detector's series; each detector owns one, so several share a process."""

    PREFIX = "ghgwatch_detector"
    SERVICE = "detector"
    PORT_FIELD = "detector_port"

    def __init__(self) -> None:
        super().__init__()
        self.readings = self.counter("readings_processed", "Live readings run through the engine.")
        self.late = self.counter(
            "readings_late",
            "Readings older than their stream's newest one (the engine checks them late).",
        )
        self.detections = self.counter(
            "detections",
            "Detection records stored and published, by state (open/cleared), detector and "
            "severity.",
            ["state", "detector", "severity"],
        )
        self.derived = self.counter("derived_points_stored", "Derived series points written.")
        self.batch_seconds = self.histogram(
            "batch_seconds",
            "Time to decode, detect, write, produce and advance one polled batch.",
            BATCH_SECONDS_BUCKETS_S,
        )
        self.lag_gauge("Readings records")

    def count_batch(
        self,
        *,
        readings: int,
        late: int,
        records: Iterable[DetectionRecord],
        derived: int,
        seconds: float,
    ) -> None:
        """Count one batch whose outputs are durable.

        Args:
            readings: live readings the engine processed.
            late: of those, readings the engine reported late.
            records: the detection records written and produced.
            derived: derived points written.
            seconds: the batch's wall time.
        """
        self.readings.inc(readings)
        self.late.inc(late)
        for r in records:
            self.detections.labels(r.state.value, r.detector, r.severity.value).inc()
        self.derived.inc(derived)
        self.batch_seconds.observe(seconds)
