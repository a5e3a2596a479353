"""Prometheus metrics of the storing processor, and the HTTP endpoint that exposes them."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from core.errors import ConfigurationError
from core.settings import MetricsSettings

__all__ = [
    "BACKPRESSURE_PAUSES",
    "BATCH_SECONDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS_STORED",
    "DUPLICATES_SKIPPED",
    "END_TO_END_SECONDS",
    "READINGS_STORED",
    "UNDECODABLE_RECORDS",
    "start_metrics_server",
]

READINGS_STORED = Counter(
    "ghgwatch_processor_readings_stored_total", "Readings newly stored in the database."
)
DUPLICATES_SKIPPED = Counter(
    "ghgwatch_processor_duplicates_skipped_total",
    "Readings delivered again (redelivery, replay) and skipped because already stored.",
)
DEAD_LETTERS_STORED = Counter(
    "ghgwatch_processor_dead_letters_stored_total",
    "Dead-letter deliveries stored, by reason.",
    ["reason"],
)
UNDECODABLE_RECORDS = Counter(
    "ghgwatch_processor_undecodable_records_total",
    "Kafka records that did not decode (stored as dead letters), by topic.",
    ["topic"],
)
BACKPRESSURE_PAUSES = Counter(
    "ghgwatch_processor_backpressure_pauses_total",
    "Times the database pushed back and the processor paused and rewound.",
)
BATCH_SECONDS = Histogram(
    "ghgwatch_processor_batch_seconds",
    "Time to decode, write and commit one polled batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
END_TO_END_SECONDS = Histogram(
    "ghgwatch_processor_end_to_end_seconds",
    "Per stored message: stored_at - received_at (bridge receipt to database transaction).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
CONSUMER_LAG = Gauge(
    "ghgwatch_processor_consumer_lag",
    "Records not yet consumed per partition (high watermark - position).",
    ["topic", "partition"],
)


def start_metrics_server(cfg: MetricsSettings) -> Callable[[], None]:
    """Serve ``/metrics`` on ``cfg.host:cfg.processor_port`` in a daemon thread.

    Args:
        cfg: the ``metrics`` settings section.

    Returns:
        A function that shuts the server down (a no-op when metrics are disabled).

    Raises:
        ConfigurationError: the address cannot be bound (port in use).
    """
    if not cfg.enabled:
        return lambda: None
    try:
        server, thread = start_http_server(cfg.processor_port, addr=cfg.host)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve processor metrics on {cfg.host}:{cfg.processor_port}: {exc}"
        ) from exc

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5.0)

    return stop
