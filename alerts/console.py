"""Terminal side of the on-call tools: what ``ghgwatch alerts ...`` runs and prints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from alerts.exceptions import AlertError
from alerts.models import AlertDetail, AlertFilter, AlertView, SilenceView
from alerts.store import AlertStore
from core.settings import Settings

__all__ = ["AlertConsole", "format_alert_header", "format_alert_line", "format_detail"]

Action = Literal["list", "show", "ack", "resolve", "silence"]


_TIME_CHARS = len("2026-01-01 00:00:00 +08:00")


def _local(at: datetime | None, tz: str) -> str:
    """A time in ``tz`` with its UTC offset, so it reads unambiguously beside UTC ones."""
    if at is None:
        return "-".ljust(_TIME_CHARS)
    local = at.astimezone(ZoneInfo(tz))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


def format_alert_header(tz: str = "Asia/Shanghai") -> str:
    """The column heads above :func:`format_alert_line` rows."""
    return (
        f"{'ALERT':<7} {'SEVERITY':<11} {'STATE':<12} {'STARTED (' + tz + ')':<{_TIME_CHARS}} "
        "NETWORK/SITE DETECTOR DEVICE VALUE/THRESHOLD"
    )


def format_alert_line(a: AlertView, tz: str = "Asia/Shanghai") -> str:
    """One line per alert for ``ghgwatch alerts list`` (time in ``tz``, with its offset)."""
    ack = f" ack:{a.acknowledged_by}" if a.acknowledged_by else ""
    cond = " (cleared)" if not a.condition_active else ""
    thr = f"/{a.threshold:g}" if a.threshold is not None else ""
    return (
        f"#{a.alert_id:<6} {a.severity:<11} {a.state:<12} {_local(a.started_at, tz)} "
        f"{a.network}/{a.site} {a.detector} {a.device_id} {a.value:g}{thr}{ack}{cond}"
    )


def format_detail(d: AlertDetail, tz: str = "Asia/Shanghai") -> str:
    """Multi-line view of one alert with its detections, history and notifications."""
    a = d.alert
    out = [
        format_alert_line(a, tz),
        f"  rule {a.rule}, group {a.group_key}, escalation level {a.escalation_level}",
        f"  detections ({len(d.detections)}):",
    ]
    out += [
        f"    {x.state:<8} {_local(x.started_at, tz)} {x.device_id} {x.detector} {x.value:g}"
        for x in d.detections
    ]
    out.append("  history:")
    out += [
        f"    {_local(e.at, tz)} {e.event:<24} {e.actor}"
        + (f" {json.dumps(e.detail, ensure_ascii=False)}" if e.detail else "")
        for e in d.events
    ]
    out.append("  notifications:")
    out += [
        f"    {n.event:<16} {n.target:<12} {n.status:<10} attempts={n.attempts}"
        + (f" last_error={n.last_error}" if n.last_error else "")
        for n in d.notifications
    ]
    return "\n".join(out)


class AlertConsole:
    """Runs on-call actions directly on the database (same store as the API).

    Args:
        settings: the whole settings (db URL, alerts section).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def run(self, action: Action, *, as_json: bool = False, **kw: Any) -> str:
        """Carry out one action and return the text to print.

        Args:
            action: list, show, ack, resolve or silence.
            as_json: print JSON instead of text.
            **kw: the action's arguments (filter fields, alert_id, by, note, duration_s...).

        Returns:
            Text for the terminal.

        Raises:
            AlertNotFound: unknown alert.
            InvalidTransition: the action does not fit the alert's state.
        """
        s = self._settings
        tz = s.alerts.timezone
        now = datetime.now(UTC)
        async with AlertStore(s.db_url(), s.alerts, s.db) as store:
            result: Any
            if action == "list":
                try:
                    flt = AlertFilter(**kw)
                except ValidationError as exc:
                    raise AlertError(f"bad filter: {exc.errors()[0]['msg']}") from exc
                result = await store.reads.list_alerts(flt)
                rows = [format_alert_line(a, tz) for a in result]
                text = "\n".join([format_alert_header(tz), *rows]) if rows else "no alerts"
            elif action == "show":
                result = await store.reads.get_alert(kw["alert_id"])
                text = format_detail(result, tz)
            elif action == "ack":
                result = await store.writes.acknowledge(
                    kw["alert_id"], kw["by"], kw.get("note"), now
                )
                text = format_alert_line(result, tz)
            elif action == "resolve":
                result = await store.writes.resolve(kw["alert_id"], kw["by"], kw.get("note"), now)
                text = format_alert_line(result, tz)
            else:
                silence: SilenceView = await store.writes.silence_alert(
                    kw["alert_id"], kw["by"], kw.get("duration_s"), kw["reason"], now
                )
                result = silence
                text = (
                    f"silence #{silence.silence_id} until {_local(silence.ends_at, tz)} "
                    f"({silence.network}/{silence.site}, group {silence.group})"
                )
        if as_json:
            if isinstance(result, list):
                return json.dumps([r.model_dump(mode="json") for r in result], indent=2)
            return json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False)
        return text
