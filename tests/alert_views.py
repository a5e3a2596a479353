"""One stored alert as the API and the CLI show it, for tests of what is drawn from it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alerts.models import AlertView


def alert_view(started_at: datetime, **fields: Any) -> AlertView:
    """An open critical mine alert started (and last updated) at ``started_at``; any field
    can be given instead."""
    values: dict[str, Any] = {
        "alert_id": 7,
        "group_key": "mine/ordos-coal/buertai/gas",
        "rule": "mine_gas",
        "severity": "critical",
        "state": "open",
        "condition_active": True,
        "network": "ordos-coal",
        "site": "buertai",
        "kind": "mine",
        "device_id": "ordos-coal/buertai/t1-0302",
        "metric": "ch4_pct_vol",
        "detector": "threshold_alarm",
        "value": 1.6,
        "threshold": 1.0,
        "location": "T1",
        "started_at": started_at,
        "last_seen_at": started_at,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolve_due_at": None,
        "resolved_at": None,
        "resolved_by": None,
        "escalation_level": 0,
        "next_escalation_at": None,
        "silenced_until": None,
        "created_at": started_at,
        "updated_at": started_at,
    }
    values.update(fields)
    return AlertView(**values)
