"""Prometheus series of the bridge, in a registry of its own (``ghgwatch_bridge``).

Like every service (see :mod:`adapters.metrics`), each bridge owns its registry, so several
bridges run in one process (tests, shared-subscription groups). Unlike the Kafka consumers,
which count per batch, the bridge counts per MQTT message: its hot path bumps plain integers
(no locks, no label lookups) and a custom collector turns them into Prometheus families at
scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["ACK_LATENCY_BUCKETS_S", "BridgeMetrics", "BridgeStats"]

# From "fast" (a produce round trip on a local broker) to "Kafka was down for a minute".
ACK_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip
_PREFIX = "ghgwatch_bridge"


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """A snapshot of what a bridge has done so far (what :meth:`ingest.Bridge.run` returns).

    Attributes:
        received: MQTT messages taken from the broker (redeliveries count again).
        accepted: messages that passed validation.
        rejected: messages dead-lettered, by reason code.
        produced: records Kafka confirmed, by topic role (``readings`` / ``deadletter``).
        produce_errors: failed produce attempts (each retried until stop).
        dropped: messages given up for good, by reason (counted and logged per device).
        acked: MQTT messages acknowledged to the broker (QoS 1) or settled (QoS 0).
        in_flight: messages received but not yet settled.
        status_published: status messages handed to the broker for rejected messages.
        ignored: messages on topics ghgwatch publishes itself (status replies, alerts),
            acknowledged and skipped.
        status_coalesced: status replies never sent because newer ones for the same device
            replaced them (a reject flood), or too many devices had replies waiting.
        redeliveries_skipped: broker redeliveries of messages already in Kafka (after a
            reconnect), acknowledged without producing them again.
    """

    received: int
    accepted: int
    rejected: dict[str, int]
    produced: dict[str, int]
    produce_errors: int
    dropped: dict[str, int]
    acked: int
    in_flight: int
    status_published: int
    ignored: int = 0
    status_coalesced: int = 0
    redeliveries_skipped: int = 0

    @property
    def rejected_total(self) -> int:
        """All rejected messages, whatever the reason."""
        return sum(self.rejected.values())

    @property
    def dropped_total(self) -> int:
        """All dropped messages, whatever the reason."""
        return sum(self.dropped.values())


class BridgeMetrics:
    """The bridge's counters, gauge and ack-latency histogram, exposed as a Prometheus collector."""

    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self.produced: dict[str, int] = {}
        self.produce_errors = 0
        self.dropped: dict[str, int] = {}
        self.acked = 0
        self.in_flight = 0
        self.status_published = 0
        self.ignored = 0
        self.status_coalesced = 0
        self.redeliveries_skipped = 0
        self.mqtt_connects = 0
        # Called before each snapshot or scrape, to pull counters kept elsewhere.
        self.refresh: Callable[[], None] | None = None
        self._bucket_counts = [0] * (len(ACK_LATENCY_BUCKETS_S) + 1)
        self._latency_sum_s = 0.0
        self._latency_count = 0
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def count_rejected(self, reason: str) -> None:
        """Count one rejected message under its reason code."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def count_produced(self, role: str) -> None:
        """Count one record Kafka confirmed on the topic with this role."""
        self.produced[role] = self.produced.get(role, 0) + 1

    def count_dropped(self, reason: str) -> None:
        """Count one message given up for good."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def observe_ack_latency(self, seconds: float) -> None:
        """Record the time from receiving a message to acknowledging it."""
        self._bucket_counts[bisect.bisect_left(ACK_LATENCY_BUCKETS_S, seconds)] += 1
        self._latency_sum_s += seconds
        self._latency_count += 1

    def snapshot(self) -> BridgeStats:
        """The current values as an immutable :class:`BridgeStats`."""
        if self.refresh is not None:
            self.refresh()
        return BridgeStats(
            received=self.received,
            accepted=self.accepted,
            rejected=dict(self.rejected),
            produced=dict(self.produced),
            produce_errors=self.produce_errors,
            dropped=dict(self.dropped),
            acked=self.acked,
            in_flight=self.in_flight,
            status_published=self.status_published,
            ignored=self.ignored,
            status_coalesced=self.status_coalesced,
            redeliveries_skipped=self.redeliveries_skipped,
        )

    def collect(self) -> Iterator[Metric]:
        """Yield the Prometheus families (called by the registry on each scrape)."""
        if self.refresh is not None:
            self.refresh()
        simple = (
            ("messages_received", "MQTT messages received", self.received),
            ("messages_accepted", "MQTT messages that passed validation", self.accepted),
            ("produce_errors", "Failed Kafka produce attempts (retried)", self.produce_errors),
            ("messages_acked", "MQTT messages acknowledged after Kafka confirmed", self.acked),
            ("status_published", "Rejection notices published to devices", self.status_published),
            ("mqtt_connects", "Successful MQTT (re)connections", self.mqtt_connects),
            ("messages_ignored", "Messages on ghgwatch's own topics, skipped", self.ignored),
            (
                "status_coalesced",
                "Status replies replaced by newer ones for the same device",
                self.status_coalesced,
            ),
            (
                "redeliveries_skipped",
                "Broker redeliveries of messages already in Kafka, acked only",
                self.redeliveries_skipped,
            ),
        )
        for name, text, value in simple:
            family = CounterMetricFamily(f"{_PREFIX}_{name}", text)
            family.add_metric([], value)
            yield family
        labelled = (
            ("messages_rejected", "Messages dead-lettered, by reason", "reason", self.rejected),
            ("records_produced", "Records Kafka confirmed, by topic role", "topic", self.produced),
            ("messages_dropped", "Messages given up for good, by reason", "reason", self.dropped),
        )
        for name, text, label, values in labelled:
            family = CounterMetricFamily(f"{_PREFIX}_{name}", text, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            yield family
        gauge = GaugeMetricFamily(
            f"{_PREFIX}_in_flight_messages", "Messages received but not yet acknowledged"
        )
        gauge.add_metric([], self.in_flight)
        yield gauge
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            (*ACK_LATENCY_BUCKETS_S, float("inf")), self._bucket_counts, strict=True
        ):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else f"{bound:g}", cumulative))
        histogram = HistogramMetricFamily(
            f"{_PREFIX}_ack_latency_seconds", "From MQTT receive to MQTT acknowledgement"
        )
        histogram.add_metric([], buckets, sum_value=self._latency_sum_s)
        yield histogram
