"""The gateway's Prometheus series (``ghgwatch_gateway_*``), in a registry of its own."""

from __future__ import annotations

from typing import ClassVar

from adapters.metrics import ServiceMetrics

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics(ServiceMetrics):
    """Frames, readings, rejects, answers, connections and backfill of the HJ 212 gateway."""

    PREFIX: ClassVar[str] = "ghgwatch_gateway"
    SERVICE: ClassVar[str] = "gateway"
    PORT_FIELD: ClassVar[str] = "gateway_port"

    def __init__(self) -> None:
        super().__init__()
        self.frames = self.counter("frames", "Whole frames received, by command code.", ["cn"])
        self.rejected = self.counter("rejected", "Frames dead-lettered, by reason.", ["reason"])
        self.readings = self.counter("readings", "Readings produced to Kafka.")
        self.answers = self.counter("answers", "Answers sent to loggers, by code.", ["cn"])
        self.skipped_codes = self.counter(
            "skipped_codes", "Pollutant values with no metric for the logger's kind."
        )
        self.not_stored = self.counter(
            "not_stored", "Data packets answered but not stored (not live, not asked for).", ["cn"]
        )
        self.produce_errors = self.counter("produce_errors", "Kafka produce attempts that failed.")
        self.connections = self.gauge("connections", "Open logger connections.")
        self.refused_connections = self.counter(
            "refused_connections", "Connections closed at once: max_connections reached."
        )
        self.closed = self.counter("closed", "Connections closed, by why.", ["why"])
        self.backfill_requests = self.counter("backfill_requests", "History requests sent.")
        self.backfill_readings = self.counter("backfill_readings", "Readings from history.")
        self.frames_in_flight = self.gauge(
            "frames_in_flight", "Frames read whose answer waits for Kafka (all connections)."
        )
        self.window_full = self.counter(
            "window_full",
            "Times a connection stopped reading: gateway.frames_in_flight frames unconfirmed.",
        )
        self.frame_seconds = self.histogram(
            "frame_seconds", "Frame received to answered (Kafka confirmed).", _LATENCY_BUCKETS_S
        )
