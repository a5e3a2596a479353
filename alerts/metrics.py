"""Prometheus series of the alert service, in a registry of its own (``ghgwatch_alerts``)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from adapters import ServiceMetrics

__all__ = ["NOTIFY_LATENCY_BUCKETS_S", "AlertMetrics"]

# From a local webhook answering at once to a notifier retried with backoff for minutes.
NOTIFY_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0
)  # fmt: skip


class AlertMetrics(ServiceMetrics):
    """The alert service's series; each service owns one, so several share a process."""

    PREFIX = "ghgwatch_alerts"
    SERVICE = "alert"
    PORT_FIELD = "alerts_port"

    def __init__(self) -> None:
        super().__init__()
        self.detections = self.counter(
            "detections_consumed",
            "Detection records decoded from Kafka and applied to the alert store.",
        )
        self.invalid = self.counter(
            "detections_undecodable", "Detection records that did not decode (logged and skipped)."
        )
        self.duplicates = self.counter(
            "duplicates_ignored", "Detections seen before (redelivery, replay) and ignored."
        )
        self.opened = self.counter("alerts_opened", "Alerts opened, by severity.", ["severity"])
        self.resolved = self.counter(
            "alerts_resolved",
            "Alerts resolved automatically after their hold time, by severity.",
            ["severity"],
        )
        self.escalated = self.counter(
            "alerts_escalated",
            "Unacknowledged alerts escalated one level, by severity.",
            ["severity"],
        )
        self.sent = self.counter(
            "notifications_sent", "Notifications delivered, by notifier type.", ["notifier"]
        )
        self.failed = self.counter(
            "notifications_failed",
            "Failed delivery attempts, by notifier type; final=true: given up for good.",
            ["notifier", "final"],
        )
        self.unknown = self.counter(
            "notifications_unknown",
            "Notifications whose send was interrupted by a crash and not re-sent (the receiver"
            " cannot de-duplicate): check the receiver, by notifier type.",
            ["notifier"],
        )
        self.outbox_pending = self.gauge(
            "outbox_pending",
            "Outbox rows waiting to be sent or being sent (as of the last sweep).",
        )
        self.latency = self.histogram(
            "detection_to_notification_seconds",
            "From applying a detection that opened or raised an alert to its notification "
            "being delivered.",
            NOTIFY_LATENCY_BUCKETS_S,
        )

    @staticmethod
    def _count_by(counter: Counter, by_severity: Mapping[str, int]) -> None:
        for severity, n in by_severity.items():
            counter.labels(severity).inc(n)

    def count_applied(self, *, detections: int, duplicates: int, opened: Mapping[str, int]) -> None:
        """Count one applied batch of detections.

        Args:
            detections: detections applied (duplicates included).
            duplicates: of those, detections seen before.
            opened: alerts opened, by severity.
        """
        self.detections.inc(detections)
        self.duplicates.inc(duplicates)
        self._count_by(self.opened, opened)

    def count_swept(self, *, resolved: Mapping[str, int], escalated: Mapping[str, int]) -> None:
        """Count one sweep's auto-resolved and escalated alerts, by severity."""
        self._count_by(self.resolved, resolved)
        self._count_by(self.escalated, escalated)

    def count_delivery(self, notifier: str, status: str, latency_s: float | None) -> None:
        """Count one delivery attempt by its outcome.

        Args:
            notifier: the notifier type (``webhook``, ``email``, ``grafana`` ...).
            status: the outbox row's status after the attempt (``sent``, ``pending`` = will
                retry, ``failed`` = given up, ``unknown`` = interrupted, not re-sent;
                anything else is not counted).
            latency_s: for a delivered notification caused by a detection, the seconds from
                applying that detection to delivery; None otherwise.
        """
        if status == "sent":
            self.sent.labels(notifier).inc()
            if latency_s is not None:
                self.latency.observe(max(0.0, latency_s))
        elif status in ("pending", "failed"):
            self.failed.labels(notifier, "true" if status == "failed" else "false").inc()
        elif status == "unknown":
            self.unknown.labels(notifier).inc()
