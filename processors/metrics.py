"""Prometheus series of the storing processor, in a registry of its own (``ghgwatch_processor``)."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from adapters import BATCH_SECONDS_BUCKETS_S, ServiceMetrics

__all__ = ["END_TO_END_BUCKETS_S", "ProcessorMetrics"]

# Bridge receipt to database transaction: well under a second when keeping up, minutes after
# an outage while a backlog drains.
END_TO_END_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0
)  # fmt: skip


class ProcessorMetrics(ServiceMetrics):
    """The storing processor's series; each processor owns one, so several share a process."""

    PREFIX = "ghgwatch_processor"
    SERVICE = "processor"
    PORT_FIELD = "processor_port"

    def __init__(self) -> None:
        super().__init__()
        self.readings_stored = self.counter(
            "readings_stored", "Readings newly stored in the database."
        )
        self.duplicates_skipped = self.counter(
            "duplicates_skipped",
            "Readings delivered again (redelivery, replay) and skipped because already stored.",
        )
        self.dead_letters_stored = self.counter(
            "dead_letters_stored", "Dead-letter deliveries stored, by reason.", ["reason"]
        )
        self.undecodable_records = self.counter(
            "undecodable_records",
            "Kafka records that did not decode (stored as dead letters), by topic.",
            ["topic"],
        )
        self.records_quarantined = self.counter(
            "records_quarantined",
            "Kafka records the database could not store, kept as unstorable_record dead letters.",
        )
        self.backpressure_pauses = self.counter(
            "backpressure_pauses",
            "Times the database pushed back and the processor paused and rewound.",
        )
        self.batch_seconds = self.histogram(
            "batch_seconds",
            "Time to decode, write and commit one polled batch.",
            BATCH_SECONDS_BUCKETS_S,
        )
        self.end_to_end_seconds = self.histogram(
            "end_to_end_seconds",
            "Per stored message: stored_at - received_at (bridge receipt to database transaction).",
            END_TO_END_BUCKETS_S,
        )
        self.lag_gauge("Records")

    def count_batch(
        self,
        *,
        inserted: int,
        duplicates: int,
        dead_reasons: Iterable[str],
        latencies_s: Iterable[float],
        seconds: float,
        quarantined: int = 0,
    ) -> None:
        """Count one stored batch.

        Args:
            inserted: readings newly stored.
            duplicates: readings found already stored.
            dead_reasons: the reason of each dead letter stored.
            latencies_s: per stored message, bridge receipt to database transaction.
            seconds: the batch's wall time.
            quarantined: records the database refused, stored as dead letters instead.
        """
        self.readings_stored.inc(inserted)
        self.records_quarantined.inc(quarantined)
        self.duplicates_skipped.inc(duplicates)
        for reason, n in collections.Counter(dead_reasons).items():
            self.dead_letters_stored.labels(reason).inc(n)
        for latency in latencies_s:
            self.end_to_end_seconds.observe(latency)
        self.batch_seconds.observe(seconds)
