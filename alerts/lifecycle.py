"""Pure alert lifecycle decisions: open, join, escalate, auto-resolve, on-call checks, silences.

No database here: every function takes the alert as it is (an :class:`AlertView`), the clock
and the ``alerts`` settings, and says what should change. :mod:`alerts.writes` reads and
locks the rows, asks these functions, and writes their answers in one transaction.

The lifecycle::

    detection (open) --+-- new group key ----------> open      (escalation deadline per severity)
                       +-- active alert of the key -> joined    (a higher severity raises it)
    last detection cleared -> condition inactive, resolve due after ``resolve_hold_s``
    (a new detection of the group before then keeps the alert open)
    open, not acknowledged by the deadline -> escalated one level, up to ``max_escalations``
    (every ``escalate_after_s[severity]``; severities without a time never escalate)
    open --acknowledge--> acknowledged (escalation stops); any but resolved --resolve--> resolved
    resolve due passed -> resolved by ``auto``

A detection id seen before changes nothing (redelivery, replay): the de-duplication is the
``alert_detections`` primary key, checked first by :mod:`alerts.writes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from alerts.exceptions import InvalidTransition
from alerts.models import AlertView
from alerts.rules import SEVERITY_RANK, AlertDecision, classify
from core.settings import AlertsSettings
from wire.events import DetectionRecord

__all__ = [
    "Escalation",
    "Joining",
    "Opening",
    "alert_silence_active",
    "check_acknowledge",
    "check_resolve",
    "check_silence",
    "escalate",
    "escalation_deadline",
    "join",
    "notification_status",
    "open_detection",
    "resolve_due_at",
    "silence_until",
    "silences_device_only",
]

DeliveryStatus = Literal["pending", "suppressed"]


def _after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class Opening:
    """What an open detection asks for, before knowing whether its group has an active alert.

    Attributes:
        decision: the rule's verdict (severity, group key).
        next_escalation_at: when a new alert of this severity escalates (severities with an
            ``escalate_after_s`` time, while ``max_escalations`` allows any); None: never.
    """

    decision: AlertDecision
    next_escalation_at: datetime | None


@dataclass(frozen=True, slots=True)
class Joining:
    """What a detection joining an active alert changes.

    Attributes:
        raised: the detection is more severe than the alert: the alert takes its severity,
            rule and reading, and the change is announced.
        next_escalation_at: the alert's escalation deadline after the join.
    """

    raised: bool
    next_escalation_at: datetime | None


@dataclass(frozen=True, slots=True)
class Escalation:
    """One escalation step of an unacknowledged alert.

    Attributes:
        level: the new escalation level (1 = first escalation).
        next_escalation_at: the following step's deadline; None after the last one.
    """

    level: int
    next_escalation_at: datetime | None


def open_detection(rec: DetectionRecord, cfg: AlertsSettings, now: datetime) -> Opening:
    """Classify an open detection and set the escalation deadline of the alert it may open.

    Args:
        rec: the detection.
        cfg: the ``alerts`` settings (rules, escalation times).
        now: the service clock.

    Returns:
        The decision and the escalation deadline.
    """
    decision = classify(rec, cfg.rules)
    return Opening(decision, escalation_deadline(decision.severity, cfg, now))


def escalation_deadline(severity: str, cfg: AlertsSettings, now: datetime) -> datetime | None:
    """When an alert of ``severity`` not acknowledged since ``now`` escalates.

    Args:
        severity: the alert's severity.
        cfg: the ``alerts`` settings (``escalate_after_s`` per severity, ``max_escalations``).
        now: the start of the wait (opening, or the previous escalation).

    Returns:
        The deadline; None when alerts of this severity never escalate.
    """
    after_s = cfg.escalate_after_s.get(severity)  # type: ignore[call-overload]
    if after_s is None or cfg.max_escalations <= 0:
        return None
    return _after(now, after_s)


def join(alert: AlertView, opening: Opening) -> Joining:
    """Join a detection to the active alert of its group.

    A more severe detection raises the alert; a raised alert that is still open keeps its
    escalation deadline or takes the one a new alert of that severity would have, whichever
    comes first (a warning raised to critical does not wait out the warning's longer time).

    Args:
        alert: the active alert of the detection's group key (locked).
        opening: the detection's :func:`open_detection` answer.

    Returns:
        Whether the severity rises and the escalation deadline after the join.
    """
    raised = SEVERITY_RANK[opening.decision.severity] > SEVERITY_RANK[alert.severity]
    esc = alert.next_escalation_at
    if raised and alert.state == "open" and opening.next_escalation_at is not None:
        esc = opening.next_escalation_at if esc is None else min(esc, opening.next_escalation_at)
    return Joining(raised, esc)


def resolve_due_at(cfg: AlertsSettings, now: datetime) -> datetime:
    """When an alert whose last open detection cleared now resolves, unless a new one comes."""
    return _after(now, cfg.resolve_hold_s)


def escalate(
    level: int, cfg: AlertsSettings, now: datetime, *, severity: str = "critical"
) -> Escalation:
    """The next escalation step of an alert at ``level`` whose deadline passed.

    Args:
        level: the alert's current escalation level (0 = never escalated).
        cfg: the ``alerts`` settings (``escalate_after_s``, ``max_escalations``).
        now: the service clock.
        severity: the alert's severity (its time to the next step).

    Returns:
        The new level and the next deadline (None once ``max_escalations`` is reached).
    """
    new = level + 1
    nxt = escalation_deadline(severity, cfg, now) if new < cfg.max_escalations else None
    return Escalation(new, nxt)


def check_acknowledge(alert: AlertView) -> None:
    """Only an open alert can be acknowledged.

    Raises:
        InvalidTransition: the alert is already acknowledged or resolved (says by whom).
    """
    if alert.state != "open":
        by = alert.acknowledged_by if alert.state == "acknowledged" else alert.resolved_by
        raise InvalidTransition(f"alert {alert.alert_id} is already {alert.state} (by {by})")


def check_resolve(alert: AlertView) -> None:
    """An open or acknowledged alert can be resolved by hand.

    Raises:
        InvalidTransition: the alert is already resolved (says by whom).
    """
    if alert.state == "resolved":
        raise InvalidTransition(
            f"alert {alert.alert_id} is already resolved (by {alert.resolved_by})"
        )


def check_silence(alert: AlertView) -> None:
    """An alert not resolved yet can be silenced.

    Raises:
        InvalidTransition: the alert is resolved.
    """
    if alert.state == "resolved":
        raise InvalidTransition(f"alert {alert.alert_id} is resolved; nothing to silence")


def silence_until(cfg: AlertsSettings, now: datetime, duration_s: float | None) -> datetime:
    """The end of a silence started now (``duration_s`` None: ``silence_default_s``)."""
    return _after(now, duration_s or cfg.silence_default_s)


def silences_device_only(alert: AlertView) -> bool:
    """Whether silencing this alert silences only its device (a per-device rule's group key,
    ``network/site/group/device``) instead of its site's whole group."""
    return alert.group_key.count("/") >= 3


def alert_silence_active(alert: AlertView, now: datetime) -> bool:
    """Whether a silence set on this very alert (on-call "silence") still runs."""
    return alert.silenced_until is not None and alert.silenced_until > now


def notification_status(silence_id: int | None) -> DeliveryStatus:
    """A notification is queued to be sent, or recorded as suppressed under a silence."""
    return "pending" if silence_id is None else "suppressed"
