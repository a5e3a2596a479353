"""Prometheus metrics of the detection service, in a registry of its own, and their endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters import MetricsServer
from core.errors import ConfigurationError
from core.settings import MetricsSettings
from wire.events import DetectionRecord

__all__ = ["DETECTOR_BATCH_BUCKETS_S", "DetectorMetrics"]

# One polled batch: from a handful of readings on a quiet line to a full batch_max after a
# backlog, including the database transaction and the produce round trip.
DETECTOR_BATCH_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_PREFIX = "ghgwatch_detector"


class DetectorMetrics:
    """The detection service's series; each service owns one, so several share a process.

    Attributes:
        registry: the registry holding only this service's series (serve it with
            :meth:`serve`).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.readings = Counter(
            f"{_PREFIX}_readings_processed", "Live readings run through the engine.", registry=reg
        )
        self.late = Counter(
            f"{_PREFIX}_readings_late",
            "Readings older than their stream's newest one (the engine checks them late).",
            registry=reg,
        )
        self.detections = Counter(
            f"{_PREFIX}_detections",
            "Detection records stored and published, by state (open/cleared), detector and "
            "severity.",
            ["state", "detector", "severity"],
            registry=reg,
        )
        self.derived = Counter(
            f"{_PREFIX}_derived_points_stored", "Derived series points written.", registry=reg
        )
        self.batch_seconds = Histogram(
            f"{_PREFIX}_batch_seconds",
            "Time to decode, detect, write, produce and advance one polled batch.",
            buckets=DETECTOR_BATCH_BUCKETS_S,
            registry=reg,
        )
        self.consumer_lag = Gauge(
            f"{_PREFIX}_consumer_lag",
            "Readings records not yet consumed per partition (high watermark - position).",
            ["topic", "partition"],
            registry=reg,
        )

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

    def serve(self, cfg: MetricsSettings) -> MetricsServer:
        """Serve ``/metrics`` for this registry on ``cfg.host:cfg.detector_port``.

        Args:
            cfg: the ``metrics`` section (0 = any free port; read the port from the result).

        Returns:
            The running server; :meth:`ingest.MetricsServer.close` stops it.

        Raises:
            ConfigurationError: the address cannot be bound (port in use).
        """
        try:
            return MetricsServer(self.registry, cfg.host, cfg.detector_port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve detector metrics on {cfg.host}:{cfg.detector_port}: {exc}"
            ) from exc

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Set a partition's consumer lag (records behind its high watermark)."""
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag series (another member reports it now)."""
        with contextlib.suppress(KeyError):
            self.consumer_lag.remove(topic, str(partition))
