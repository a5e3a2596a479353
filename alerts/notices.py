"""Pure notification planning: who hears of an alert change, what they are told, under which key.

Runs before anything is stored: :mod:`alerts.writes` passes the changed alert here and hands
the resulting :class:`OutboxEntry` rows to :mod:`alerts.outbox`, which only stores them.
Routing is :mod:`alerts.rules` (``route_targets``, ``escalation_targets``); the message is the
:class:`~alerts.messages.AlertMessage` snapshot the notifiers render.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from alerts.lifecycle import notification_status
from alerts.messages import AlertMessage, grafana_link
from alerts.models import AlertView
from alerts.rules import escalation_targets, route_targets
from core.settings import AlertsSettings

__all__ = [
    "GRAFANA_TARGET",
    "AlertEvent",
    "OutboxEntry",
    "ack_url",
    "alert_message",
    "notify_targets",
    "outbox_entries",
]

GRAFANA_TARGET = "grafana"
# The Grafana annotation is the alert's record on the dashboard, not a page: kept under silences.
_GRAFANA_EVENTS = ("opened", "resolved")

# The alert's own facts (what, where, reading, resolution), copied into each message.
_ALERT_FACTS = set(AlertMessage.model_fields) & set(AlertView.model_fields)

AlertEvent = Literal["opened", "severity_raised", "escalated", "resolved"]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One notification to store: to one target, about one change of one alert.

    Attributes:
        idempotency_key: ``alert-{id}/{event key}/{target}``; unique, so a change announced
            twice (a redelivered detection) is stored once.
        alert_id: the alert.
        event: what changed.
        target: the notifier name.
        channel: the notifier type (``webhook``, ``grafana`` ...).
        payload: the :class:`AlertMessage` as JSON, carrying the idempotency key.
        status: ``pending`` (to send) or ``suppressed`` (recorded under a silence).
        silence_id: the silence that suppressed it, if any.
    """

    idempotency_key: str
    alert_id: int
    event: AlertEvent
    target: str
    channel: str
    payload: dict[str, Any]
    status: Literal["pending", "suppressed"]
    silence_id: int | None


def notify_targets(
    alert: AlertView, event: AlertEvent, cfg: AlertsSettings, *, level: int = 0
) -> tuple[str, ...]:
    """Notifier names that hear of ``event``.

    An escalation reaches the route's targets plus its escalation chain up to ``level``; a
    resolution reaches everyone who heard of the alert so far (its current escalation
    level); an opening or raised severity reaches the route's targets.

    Args:
        alert: the alert after the change.
        event: the change.
        cfg: the ``alerts`` settings (routes).
        level: the escalation level, for ``escalated``.

    Returns:
        Target names, unique, in route order (possibly none).
    """
    where = {
        "network": alert.network,
        "site": alert.site,
        "kind": alert.kind,
        "severity": alert.severity,
    }
    if event == "escalated":
        return escalation_targets(cfg.routes, level=level, **where)
    if event == "resolved":
        return escalation_targets(cfg.routes, level=alert.escalation_level, **where)
    return route_targets(cfg.routes, **where)


def alert_message(
    alert: AlertView,
    event: AlertEvent,
    cfg: AlertsSettings,
    now: datetime,
    *,
    level: int = 0,
    detections: int = 1,
    devices: int = 1,
) -> AlertMessage:
    """The snapshot a notification of ``event`` carries (its idempotency key set per target).

    Args:
        alert: the alert after the change.
        event: the change.
        cfg: the ``alerts`` settings (Grafana link, acknowledgement link).
        now: when the change happened.
        level: the escalation level, for ``escalated``.
        detections: how many detections the alert has (at least 1 is shown).
        devices: how many distinct devices they came from (at least 1 is shown).

    Returns:
        The message.
    """
    return AlertMessage(
        **alert.model_dump(include=_ALERT_FACTS),
        event=event,
        level=level,
        at=now,
        detections=max(detections, 1),
        devices=max(devices, 1),
        link=grafana_link(
            cfg.grafana_url,
            cfg.grafana_dashboards,
            kind=alert.kind,
            network=alert.network,
            site=alert.site,
            device_id=alert.device_id,
            started_at=alert.started_at,
            ended_at=alert.resolved_at,
        ),
        ack_url=ack_url(cfg.ack_url_template, alert.alert_id) if event != "resolved" else None,
    )


def ack_url(template: str | None, alert_id: int) -> str | None:
    """The acknowledgement link of an alert (``{alert_id}`` filled in); None without a template.

    Args:
        template: ``alerts.ack_url_template``.
        alert_id: the alert.

    Returns:
        The URL, or None.
    """
    # str.replace, not str.format: a template may hold other braces (query strings, anchors).
    return template.replace("{alert_id}", str(alert_id)) if template else None


def outbox_entries(
    message: AlertMessage,
    event_key: str,
    targets: Sequence[str],
    channels: Mapping[str, str],
    *,
    silence_id: int | None,
    grafana: bool,
    ack_link: Callable[[str], str | None] | None = None,
) -> list[OutboxEntry]:
    """The outbox rows announcing one change: one per target, plus the Grafana record.

    Args:
        message: the change's snapshot (:func:`alert_message`).
        event_key: names the change within the alert (``opened``, ``escalated-2`` ...), so
            each change is announced once per target.
        targets: who hears of it (:func:`notify_targets`).
        channels: notifier type per target name.
        silence_id: the silence covering the alert now, if any: its targets' rows are
            recorded as suppressed.
        grafana: a Grafana URL is configured (openings and resolutions are annotated).
        ack_link: the acknowledgement link for one target (signed for that recipient, see
            :class:`alerts.links.LinkSigner`); None: the message's own ``ack_url``. A
            resolution and the Grafana record carry none.

    Returns:
        The rows, targets first.
    """
    status = notification_status(silence_id)
    rows: list[tuple[str, str, Literal["pending", "suppressed"]]] = [
        (t, channels[t], status) for t in targets
    ]
    if grafana and message.event in _GRAFANA_EVENTS:
        rows.append((GRAFANA_TARGET, "grafana", "pending"))
    out: list[OutboxEntry] = []
    for target, channel, row_status in rows:
        key = f"alert-{message.alert_id}/{event_key}/{target}"
        update: dict[str, Any] = {"idempotency_key": key}
        if message.event == "resolved" or target == GRAFANA_TARGET:
            update["ack_url"] = None
        elif ack_link is not None:
            update["ack_url"] = ack_link(target)
        out.append(
            OutboxEntry(
                idempotency_key=key,
                alert_id=message.alert_id,
                event=message.event,
                target=target,
                channel=channel,
                payload=message.model_copy(update=update).model_dump(mode="json"),
                status=row_status,
                silence_id=silence_id if row_status == "suppressed" else None,
            )
        )
    return out
