"""Prometheus metrics of the alert service, in a registry of its own, and their endpoint."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adapters import MetricsServer
from core.errors import ConfigurationError
from core.settings import MetricsSettings

__all__ = ["NOTIFY_LATENCY_BUCKETS_S", "AlertMetrics"]

# From a local webhook answering at once to a notifier retried with backoff for minutes.
NOTIFY_LATENCY_BUCKETS_S: tuple[float, ...] = (
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
    60.0,
    300.0,
    900.0,
)
_PREFIX = "ghgwatch_alerts"


class AlertMetrics:
    """The alert service's series; each service owns one, so several share a process.

    Attributes:
        registry: the registry holding only this service's series (serve it with
            :meth:`serve`).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.detections = Counter(
            f"{_PREFIX}_detections_consumed",
            "Detection records decoded from Kafka and applied to the alert store.",
            registry=reg,
        )
        self.invalid = Counter(
            f"{_PREFIX}_detections_undecodable",
            "Detection records that did not decode (logged and skipped).",
            registry=reg,
        )
        self.duplicates = Counter(
            f"{_PREFIX}_duplicates_ignored",
            "Detections seen before (redelivery, replay) and ignored.",
            registry=reg,
        )
        self.opened = Counter(
            f"{_PREFIX}_alerts_opened", "Alerts opened, by severity.", ["severity"], registry=reg
        )
        self.resolved = Counter(
            f"{_PREFIX}_alerts_resolved",
            "Alerts resolved automatically after their hold time, by severity.",
            ["severity"],
            registry=reg,
        )
        self.escalated = Counter(
            f"{_PREFIX}_alerts_escalated",
            "Unacknowledged alerts escalated one level, by severity.",
            ["severity"],
            registry=reg,
        )
        self.sent = Counter(
            f"{_PREFIX}_notifications_sent",
            "Notifications delivered, by notifier type.",
            ["notifier"],
            registry=reg,
        )
        self.failed = Counter(
            f"{_PREFIX}_notifications_failed",
            "Failed delivery attempts, by notifier type; final=true: given up for good.",
            ["notifier", "final"],
            registry=reg,
        )
        self.unknown = Counter(
            f"{_PREFIX}_notifications_unknown",
            "Notifications whose send was interrupted by a crash and not re-sent (the receiver"
            " cannot de-duplicate): check the receiver, by notifier type.",
            ["notifier"],
            registry=reg,
        )
        self.outbox_pending = Gauge(
            f"{_PREFIX}_outbox_pending",
            "Outbox rows waiting to be sent or being sent (as of the last sweep).",
            registry=reg,
        )
        self.latency = Histogram(
            f"{_PREFIX}_detection_to_notification_seconds",
            "From applying a detection that opened or raised an alert to its notification "
            "being delivered.",
            buckets=NOTIFY_LATENCY_BUCKETS_S,
            registry=reg,
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

    def serve(self, cfg: MetricsSettings) -> MetricsServer:
        """Serve ``/metrics`` for this registry on ``cfg.host:cfg.alerts_port``.

        Args:
            cfg: the ``metrics`` section (0 = any free port; read the port from the result).

        Returns:
            The running server; :meth:`adapters.MetricsServer.close` stops it.

        Raises:
            ConfigurationError: the address cannot be bound (port in use).
        """
        try:
            return MetricsServer(self.registry, cfg.host, cfg.alerts_port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve alert metrics on {cfg.host}:{cfg.alerts_port}: {exc}"
            ) from exc
