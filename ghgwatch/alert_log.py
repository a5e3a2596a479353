"""The console lines ``ghgwatch up`` prints as alerts open, escalate, clear and resolve.

``up`` follows the alert store the way ``ghgwatch alerts list`` reads it (polling
:meth:`alerts.AlertStore.list_alerts` every ``ALERT_POLL_S``), so it needs no hook inside the
alert service, sees changes made by any process (an acknowledgement from another terminal or
the API, an escalation by the sweeper) and starts where the store is. Alerts already there
when ``up`` starts are not announced again; their later changes are.

One line per change, readable without the docs::

    ALERT #12 opened      critical  shendong/bulianta  device t2-0100  methane alarm level
        (threshold_alarm)  reading 3.12 % vol, threshold 1 % vol  ->  ghgwatch alerts ack 12
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog
from rich.console import Console

from alerts import SEVERITY_RANK, AlertFilter, AlertStore, AlertView
from core.errors import GhgwatchError
from core.settings import Settings
from wire.detectors import detector_spec
from wire.schemas import METRICS

__all__ = ["ALERT_POLL_S", "AlertChange", "AlertLog", "alert_changes", "format_change"]

log = structlog.get_logger(__name__)

# How often `up` reads the alert store for changes: a console line within about a second.
ALERT_POLL_S = 1.0
# Alerts read per poll, newest first: far more than change between two polls on one machine.
ALERT_POLL_LIMIT = 500
_STYLES = {"critical": "bold red", "warning": "yellow", "maintenance": "cyan", "info": "dim"}


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One change of an alert between two reads.

    Attributes:
        what: ``opened``, ``escalated``, ``acknowledged``, ``cleared`` (the condition is
            gone; the alert resolves after its hold time) or ``resolved``.
        alert: the alert as read after the change.
    """

    what: str
    alert: AlertView


def alert_changes(
    before: dict[int, AlertView], now: Iterable[AlertView], *, announce_new: bool = True
) -> list[AlertChange]:
    """What changed between two reads of the alerts, oldest alert first; updates ``before``.

    Args:
        before: the alerts of the previous read by id; updated in place to ``now``.
        now: the alerts read now.
        announce_new: report alerts not seen before as opened (False for the first read).

    Returns:
        The changes, in alert id order, each alert's in lifecycle order.
    """
    out: list[AlertChange] = []
    for a in sorted(now, key=lambda x: x.alert_id):
        old = before.get(a.alert_id)
        before[a.alert_id] = a
        if old is None:
            if announce_new:
                out.append(AlertChange("opened", a))
                if a.state == "resolved":
                    out.append(AlertChange("resolved", a))
            continue
        if SEVERITY_RANK[a.severity] > SEVERITY_RANK[old.severity] or (
            a.escalation_level > old.escalation_level
        ):
            out.append(AlertChange("escalated", a))
        if old.state == "open" and a.state == "acknowledged":
            out.append(AlertChange("acknowledged", a))
        if old.condition_active and not a.condition_active and a.state != "resolved":
            out.append(AlertChange("cleared", a))
        if old.state != "resolved" and a.state == "resolved":
            out.append(AlertChange("resolved", a))
    return out


def _unit(metric: str) -> str:
    spec = METRICS.get(metric)
    return f" {spec.unit}" if spec is not None else ""


def format_change(change: AlertChange) -> str:
    """The console line of one change: severity, site, device, detector, reading, next step."""
    a = change.alert
    spec = detector_spec(a.detector)
    label = f"{spec.label_en} ({a.detector})" if spec is not None else a.detector
    device = a.device_id.rsplit("/", 1)[-1]
    unit = _unit(a.metric)
    reading = f"reading {a.value:g}{unit}"
    if a.threshold is not None:
        reading += f", threshold {a.threshold:g}{unit}"
    if change.what == "escalated":
        reading += f", escalation level {a.escalation_level}"
    if change.what == "acknowledged" and a.acknowledged_by:
        reading += f", by {a.acknowledged_by}"
    hint = ""
    if a.state == "open" and change.what in {"opened", "escalated"}:
        hint = f"  ->  ghgwatch alerts ack {a.alert_id}"
    return (
        f"ALERT #{a.alert_id} {change.what:<12} {a.severity:<11} {a.network}/{a.site}"
        f"  device {device}  {label}  {reading}{hint}"
    )


class AlertLog:
    """Prints a console line for every alert change while ``up`` runs.

    Args:
        settings: the resolved settings (database URL, alerts section).
        console: where the lines go.
        poll_s: how often the store is read.
    """

    def __init__(self, settings: Settings, console: Console, poll_s: float = ALERT_POLL_S):
        self._settings = settings
        self._console = console
        self._poll_s = poll_s
        self._seen: dict[int, AlertView] = {}

    def _print(self, changes: Sequence[AlertChange]) -> None:
        for change in changes:
            self._console.print(
                format_change(change),
                style=_STYLES.get(change.alert.severity),
                soft_wrap=True,
                highlight=False,
            )

    async def run(self, *, stop: asyncio.Event) -> None:
        """Read the alerts every ``poll_s`` and print what changed, until ``stop``.

        A failed read (the database is briefly away) is logged and retried at the next
        poll: the console lines are a convenience and never stop ``up``.
        """
        s = self._settings
        first = True
        # One query at a time: one connection is all this needs of the database.
        db = s.db.model_copy(update={"pool_min": 1, "pool_max": 1})
        async with AlertStore(s.db_url(), s.alerts, db) as store:
            while not stop.is_set():
                try:
                    alerts = await store.list_alerts(AlertFilter(limit=ALERT_POLL_LIMIT))
                except GhgwatchError as exc:
                    log.warning("reading alerts for the console failed", error=str(exc))
                else:
                    self._print(alert_changes(self._seen, alerts, announce_new=not first))
                    first = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await stop.wait()
