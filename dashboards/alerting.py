"""The alerts dashboard: what is open, who acknowledged what, and the time line."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import W_FULL, W_HALF, Board, DeviceFilter, Level

__all__ = ["alerts_dashboard"]

_DESCRIPTION = (
    "The on-call picture: open and acknowledged alerts by severity, the active alerts with who"
    " acknowledged them, alerts opened over time, the latest lifecycle events and the"
    " notification outbox."
)
_ACTIVE = "a.state <> 'resolved'"


def alerts_dashboard() -> dash_b.Dashboard:
    """The alerts dashboard, over the ``alerts``, ``alert_events`` and ``alert_outbox`` tables."""
    devices = DeviceFilter(None, [Level("network", "Network", "{t}network")])
    net = "a.network IN ($network)"
    b = Board("ghgwatch-alerts", "Alerts", _DESCRIPTION, ["alerts"], devices)
    b.alert_annotations()
    b.stat(
        "Open",
        "Alerts nobody has acknowledged yet, by severity (they escalate).",
        f"""
        SELECT a.severity, count(*) AS open
        FROM alerts a WHERE a.state = 'open' AND {net}
        GROUP BY 1 ORDER BY 1
        """,
        unit="none",
        width=W_HALF,
    )
    b.stat(
        "Acknowledged",
        "Acknowledged alerts not resolved yet, by severity.",
        f"""
        SELECT a.severity, count(*) AS acknowledged
        FROM alerts a WHERE a.state = 'acknowledged' AND {net}
        GROUP BY 1 ORDER BY 1
        """,
        unit="none",
        width=W_HALF,
    )
    b.table(
        "Active alerts",
        "Open and acknowledged alerts, open ones first, newest first.",
        f"""
        SELECT a.alert_id, a.state, a.severity, a.started_at, a.network, a.site, a.device_id,
               a.metric, a.detector, a.value, a.threshold, a.condition_active,
               a.acknowledged_by, a.acknowledged_at, a.escalation_level
        FROM alerts a WHERE {_ACTIVE} AND {net}
        ORDER BY a.state = 'open' DESC, a.started_at DESC
        LIMIT 200
        """,
        width=W_FULL,
    )
    b.graph(
        "Alerts opened, by severity",
        "Alerts that started in each interval, per severity: the time line of the range.",
        f"""
        SELECT $__timeGroupAlias(a.started_at, $__interval), a.severity AS metric,
               count(*) AS alerts
        FROM alerts a
        WHERE $__timeFilter(a.started_at) AND {net}
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        unit="none",
    )
    b.graph(
        "Notification outbox",
        "Notifications created per interval by outcome (sent, pending, failed, suppressed):"
        " pending that keeps growing is a channel that cannot deliver.",
        """
        SELECT $__timeGroupAlias(o.created_at, $__interval), o.status AS metric,
               count(*) AS notifications
        FROM alert_outbox o
        WHERE $__timeFilter(o.created_at)
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        unit="none",
    )
    b.table(
        "Latest alert events",
        "Openings, escalations, acknowledgements, clears and resolutions, newest first.",
        f"""
        SELECT e.at, e.alert_id, e.event, e.actor, a.severity, a.network, a.site, a.device_id
        FROM alert_events e JOIN alerts a USING (alert_id)
        WHERE $__timeFilter(e.at) AND {net}
        ORDER BY e.at DESC
        LIMIT 200
        """,
    )
    return b.dashboard
