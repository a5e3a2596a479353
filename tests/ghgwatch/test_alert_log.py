"""The console lines `up` prints per alert change: which changes, and what a line says."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alert_views import alert_view

from alerts import AlertView
from ghgwatch.alert_log import alert_changes, format_change

AT = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def _alert(alert_id: int = 7, **changes: Any) -> AlertView:
    base: dict[str, Any] = {
        "alert_id": alert_id,
        "group_key": "mine|shendong|bulianta|gas",
        "rule": "gas",
        "network": "shendong",
        "site": "bulianta",
        "device_id": "shendong/bulianta/t1-0100",
        "value": 1.05,
    }
    base.update(changes)
    return alert_view(AT, **base)


def test_each_lifecycle_step_is_one_change_and_the_first_read_is_not_announced() -> None:
    """Alerts found at start are not announced; later ones are opened; escalation,
    acknowledgement, clearing and resolving each give one change; no change, no line."""
    seen: dict[int, AlertView] = {}
    assert alert_changes(seen, [_alert(1)], announce_new=False) == []
    steps = [
        ([_alert(1), _alert(7)], ["opened"]),
        ([_alert(1), _alert(7)], []),
        ([_alert(1), _alert(7, escalation_level=1)], ["escalated"]),
        ([_alert(1), _alert(7, escalation_level=1, state="acknowledged")], ["acknowledged"]),
        (
            [
                _alert(1),
                _alert(7, escalation_level=1, state="acknowledged", condition_active=False),
            ],
            ["cleared"],
        ),
        (
            [_alert(1), _alert(7, escalation_level=1, state="resolved", condition_active=False)],
            ["resolved"],
        ),
    ]
    for alerts, expected in steps:
        changes = alert_changes(seen, alerts)
        assert [c.what for c in changes] == expected
        assert all(c.alert.alert_id == 7 for c in changes)


def test_a_raised_severity_is_an_escalation() -> None:
    """A warning alert joined by a critical detection is announced as escalated."""
    seen: dict[int, AlertView] = {}
    alert_changes(seen, [_alert(severity="warning")])
    assert [c.what for c in alert_changes(seen, [_alert()])] == ["escalated"]


def test_a_line_names_severity_site_device_label_reading_threshold_and_the_ack_command() -> None:
    """The opened line carries what on-call staff need and how to acknowledge; once
    acknowledged the hint is gone and who acknowledged is named."""
    seen: dict[int, AlertView] = {}
    (opened,) = alert_changes(seen, [_alert()])
    line = format_change(opened)
    for part in (
        "ALERT #7",
        "opened",
        "critical",
        "shendong/bulianta",
        "device t1-0100",
        "methane alarm level (threshold_alarm)",
        "reading 1.05 % vol, threshold 1 % vol",
        "ghgwatch alerts ack 7",
    ):
        assert part in line
    (acked,) = alert_changes(seen, [_alert(state="acknowledged", acknowledged_by="li")])
    line = format_change(acked)
    assert "by li" in line
    assert "ghgwatch alerts ack" not in line
