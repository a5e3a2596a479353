"""The alert service's /metrics endpoint, on real Kafka, PostgreSQL and an HTTP receiver."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.samples import Sample

from alerts import AlertService
from core.errors import ConfigurationError
from core.settings import Settings
from tests.adapters.metrics_helpers import scrape as _scrape
from tests.adapters.metrics_helpers import value as _value
from tests.alerts.conftest import Receiver, cleared, det, produce, wait_until


def _with_metrics(s: Settings, port: int = 0) -> Settings:
    """The same settings with this service's metrics endpoint on (port 0: any free one)."""
    metrics = s.metrics.model_copy(update={"enabled": True, "alerts_port": port})
    return s.model_copy(update={"metrics": metrics})


def _webhook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "notifiers": [{"name": "oncall", "type": "webhook", "url": receiver.url("/hook")}],
        "routes": [{"name": "all", "targets": ["oncall"]}],
        **extra,
    }


async def _scrape_until(
    service: AlertService, what: str, done: Callable[[list[Sample]], bool]
) -> list[Sample]:
    """Scrape the running service's endpoint until ``done`` holds for what it shows."""
    samples: list[Sample] = []

    async def check() -> bool:
        nonlocal samples
        if service.metrics_port is None:
            return False
        samples = await asyncio.to_thread(_scrape, service.metrics_port)
        return done(samples)

    await wait_until(check, what)
    return samples


async def test_metrics_endpoint_shows_opened_alert_sent_notification_and_resolve(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """A critical detection (sent twice) then cleared: opened, duplicate, sent, resolved."""
    s = _with_metrics(alert_settings(**_webhook(receiver, resolve_hold_s=0.2)))
    stop = asyncio.Event()
    service = AlertService(s)
    running(service.run(stop=stop), stop)
    d = det()
    await produce(s, [d, d])
    await wait_until(lambda: receiver.got("/hook"), "opened notification")
    sent = "ghgwatch_alerts_notifications_sent_total"
    samples = await _scrape_until(
        service,
        "the sent notification and an empty outbox on /metrics",
        lambda got: (
            _value(got, sent, notifier="webhook") == 1
            and _value(got, "ghgwatch_alerts_outbox_pending") == 0
        ),
    )
    assert _value(samples, "ghgwatch_alerts_detections_consumed_total") == 2
    assert _value(samples, "ghgwatch_alerts_duplicates_ignored_total") == 1
    assert _value(samples, "ghgwatch_alerts_alerts_opened_total", severity="critical") == 1
    latency = "ghgwatch_alerts_detection_to_notification_seconds_count"
    assert _value(samples, latency) == 1

    await produce(s, [cleared(d)])
    samples = await _scrape_until(
        service,
        "the resolve and its notification on /metrics",
        lambda got: _value(got, sent, notifier="webhook") == 2,
    )
    assert _value(samples, "ghgwatch_alerts_alerts_resolved_total", severity="critical") == 1
    # the resolve notification was not caused by a detection opening or raising an alert
    assert _value(samples, latency) == 1
    assert _value(samples, "ghgwatch_alerts_notifications_failed_total", notifier="webhook",
                  final="true") is None  # fmt: skip


async def test_metrics_endpoint_counts_a_notification_given_up(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """A receiver refusing every attempt shows as failed attempts, the last one final."""
    receiver.responder = lambda _req: (503, {"error": "down"})
    s = _with_metrics(alert_settings(**_webhook(receiver, max_attempts=2)))
    stop = asyncio.Event()
    service = AlertService(s)
    running(service.run(stop=stop), stop)
    await produce(s, [det()])
    failed = "ghgwatch_alerts_notifications_failed_total"
    samples = await _scrape_until(
        service,
        "a notification given up on /metrics",
        lambda got: _value(got, failed, notifier="webhook", final="true") == 1,
    )
    assert _value(samples, failed, notifier="webhook", final="false") == 1
    assert _value(samples, "ghgwatch_alerts_notifications_sent_total", notifier="webhook") is None


async def test_alerts_metrics_port_in_use_is_a_configuration_error(
    alert_settings: Callable[..., Settings],
) -> None:
    """A taken alerts metrics port stops start-up with a ConfigurationError naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=str(port)):
            await AlertService(_with_metrics(alert_settings(), port)).run(timeout_s=5)
