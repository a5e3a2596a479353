"""Pure lifecycle decisions and notification planning: no database, no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alert_views import alert_view

from alerts import AlertView, InvalidTransition
from alerts.lifecycle import (
    alert_silence_active,
    check_acknowledge,
    check_resolve,
    check_silence,
    escalate,
    join,
    notification_status,
    open_detection,
    resolve_due_at,
    silence_until,
    silences_device_only,
)
from alerts.notices import GRAFANA_TARGET, alert_message, notify_targets, outbox_entries
from core.settings import AlertRoute, AlertsSettings, NotifierTarget
from tests.alerts.conftest import det
from wire.events import Severity

T0 = datetime(2026, 11, 25, 2, 30, tzinfo=UTC)

CFG = AlertsSettings(
    notifiers=(
        NotifierTarget(name="duty", type="webhook", url="http://x/duty"),
        NotifierTarget(name="shift", type="dingtalk", url="http://x/shift"),
        NotifierTarget(name="chief", type="email", email_to=("c@x.test",)),
    ),
    routes=(AlertRoute(name="mine", targets=("duty",), escalation=("shift", "chief")),),
    escalate_after_s=600.0,
    max_escalations=2,
    resolve_hold_s=120.0,
    silence_default_s=3600.0,
    grafana_url="http://grafana.local",
)
CHANNELS = {n.name: n.type for n in CFG.notifiers}


def alert(**kw: Any) -> AlertView:
    """An alert as stored: an open critical gas alert at shendong-3 unless told otherwise."""
    fields: dict[str, Any] = {
        "group_key": "im/shendong-3/gas",
        "rule": "mine_power_cut",
        "network": "im",
        "site": "shendong-3",
        "device_id": "im/shendong-3/t1-04",
        "detector": "power_cut",
        "value": 1.62,
        "threshold": 1.5,
    }
    return alert_view(T0, **{**fields, **kw})


def test_a_critical_detection_opens_an_alert_that_escalates_after_the_set_time() -> None:
    """power_cut is critical (rule mine_power_cut): escalation is due escalate_after_s later."""
    opening = open_detection(det(), CFG, T0)
    assert opening.decision.severity == "critical"
    assert opening.decision.group_key == "im/shendong-3/gas"
    assert opening.next_escalation_at == T0 + timedelta(seconds=600)


def test_warnings_and_disabled_escalation_set_no_deadline() -> None:
    """Only critical alerts escalate, and only while max_escalations allows any."""
    # anomaly is a warning in the detector catalogue (threshold_alarm became critical).
    assert open_detection(det(detector="anomaly"), CFG, T0).next_escalation_at is None
    off = CFG.model_copy(update={"max_escalations": 0})
    assert open_detection(det(), off, T0).next_escalation_at is None


def test_detections_of_one_site_share_a_group_key_per_device_rules_split_it() -> None:
    """Gas detections group per site; sensor faults (group_by device) per device."""
    a = open_detection(det(device="im/shendong-3/t0-01"), CFG, T0).decision
    b = open_detection(det(device="im/shendong-3/t0-02"), CFG, T0).decision
    assert a.group_key == b.group_key == "im/shendong-3/gas"
    fault = open_detection(det(detector="stuck", severity=Severity.WARNING), CFG, T0).decision
    assert fault.group_key == "im/shendong-3/sensor/im/shendong-3/t1-04"


def test_a_more_severe_detection_raises_the_alert_and_starts_its_escalation() -> None:
    """A warning alert joined by a critical detection is raised and gets a deadline."""
    joining = join(alert(severity="warning"), open_detection(det(), CFG, T0))
    assert joining.raised
    assert joining.next_escalation_at == T0 + timedelta(seconds=600)


def test_a_raised_alert_keeps_its_deadline_and_acknowledged_ones_get_none() -> None:
    """An existing deadline stays; an acknowledged alert does not start escalating again."""
    earlier = T0 - timedelta(seconds=30)
    opening = open_detection(det(), CFG, T0)
    kept = join(alert(severity="warning", next_escalation_at=earlier), opening)
    assert kept.raised
    assert kept.next_escalation_at == earlier
    acked = alert(severity="warning", state="acknowledged")
    assert join(acked, opening).raised
    assert join(acked, opening).next_escalation_at is None


def test_an_equal_or_lower_severity_only_joins() -> None:
    """Nothing is raised (and nothing announced) by a detection no more severe than the alert."""
    opening = open_detection(det(detector="threshold_alarm"), CFG, T0)
    joining = join(alert(next_escalation_at=T0), opening)
    assert not joining.raised
    assert joining.next_escalation_at == T0


def test_escalation_steps_until_max_escalations() -> None:
    """Level 1 schedules level 2; level 2 (the maximum) schedules nothing."""
    first = escalate(0, CFG, T0)
    assert (first.level, first.next_escalation_at) == (1, T0 + timedelta(seconds=600))
    last = escalate(1, CFG, T0)
    assert (last.level, last.next_escalation_at) == (2, None)


def test_auto_resolve_is_due_after_the_hold_time() -> None:
    """The last detection cleared: the alert resolves resolve_hold_s later."""
    assert resolve_due_at(CFG, T0) == T0 + timedelta(seconds=120)


def test_on_call_checks_refuse_impossible_transitions() -> None:
    """Acknowledge needs open; resolve and silence need not resolved; messages say by whom."""
    check_acknowledge(alert())
    with pytest.raises(InvalidTransition, match="already acknowledged \\(by ana\\)"):
        check_acknowledge(alert(state="acknowledged", acknowledged_by="ana"))
    with pytest.raises(InvalidTransition, match="already resolved \\(by auto\\)"):
        check_acknowledge(alert(state="resolved", resolved_by="auto"))
    check_resolve(alert(state="acknowledged"))
    with pytest.raises(InvalidTransition, match="already resolved"):
        check_resolve(alert(state="resolved", resolved_by="bo"))
    check_silence(alert(state="acknowledged"))
    with pytest.raises(InvalidTransition, match="nothing to silence"):
        check_silence(alert(state="resolved"))


def test_silence_decisions() -> None:
    """Default length, device-only scope for per-device alerts, and the alert's own silence."""
    assert silence_until(CFG, T0, None) == T0 + timedelta(seconds=3600)
    assert silence_until(CFG, T0, 60.0) == T0 + timedelta(seconds=60)
    assert not silences_device_only(alert())
    assert silences_device_only(alert(group_key="im/shendong-3/sensor/im/shendong-3/t1-04"))
    assert alert_silence_active(alert(silenced_until=T0 + timedelta(seconds=1)), T0)
    assert not alert_silence_active(alert(silenced_until=T0), T0)
    assert not alert_silence_active(alert(), T0)
    assert notification_status(None) == "pending"
    assert notification_status(0) == "suppressed"


def test_routing_per_event() -> None:
    """Openings reach the route's targets; escalations add the chain; resolutions reach all told."""
    a = alert()
    assert notify_targets(a, "opened", CFG) == ("duty",)
    assert notify_targets(a, "escalated", CFG, level=1) == ("duty", "shift")
    assert notify_targets(a, "escalated", CFG, level=5) == ("duty", "shift", "chief")
    assert notify_targets(alert(escalation_level=1), "resolved", CFG) == ("duty", "shift")
    assert notify_targets(alert(severity="info"), "opened", CFG) == ()


def test_message_snapshots_the_alert_with_its_link() -> None:
    """The message carries the alert's reading, counts (at least 1) and a Grafana link."""
    msg = alert_message(alert(), "opened", CFG, T0, detections=0, devices=3)
    assert (msg.alert_id, msg.event, msg.value, msg.threshold) == (7, "opened", 1.62, 1.5)
    assert (msg.detections, msg.devices, msg.at) == (1, 3, T0)
    assert (msg.rule, msg.location, msg.resolved_by) == ("mine_power_cut", "T1", None)
    assert msg.link is not None
    assert msg.link.startswith("http://grafana.local/")


def test_outbox_rows_one_per_target_plus_the_grafana_record() -> None:
    """Keys name alert, change and target; each payload carries its own key."""
    msg = alert_message(alert(), "opened", CFG, T0)
    rows = outbox_entries(msg, "opened", ("duty",), CHANNELS, silence_id=None, grafana=True)
    assert [(r.idempotency_key, r.channel, r.status) for r in rows] == [
        ("alert-7/opened/duty", "webhook", "pending"),
        (f"alert-7/opened/{GRAFANA_TARGET}", "grafana", "pending"),
    ]
    assert all(r.payload["idempotency_key"] == r.idempotency_key for r in rows)


def test_a_silence_suppresses_the_targets_but_not_the_grafana_record() -> None:
    """Under silence 4 the page is recorded as suppressed; the dashboard record still goes."""
    msg = alert_message(alert(), "opened", CFG, T0)
    rows = outbox_entries(msg, "opened", ("duty",), CHANNELS, silence_id=4, grafana=True)
    assert [(r.target, r.status, r.silence_id) for r in rows] == [
        ("duty", "suppressed", 4),
        (GRAFANA_TARGET, "pending", None),
    ]


def test_escalations_are_not_annotated_in_grafana() -> None:
    """Only openings and resolutions are recorded on the dashboard."""
    msg = alert_message(alert(), "escalated", CFG, T0, level=1)
    rows = outbox_entries(
        msg, "escalated-1", ("duty", "shift"), CHANNELS, silence_id=None, grafana=True
    )
    assert [r.idempotency_key for r in rows] == [
        "alert-7/escalated-1/duty",
        "alert-7/escalated-1/shift",
    ]
