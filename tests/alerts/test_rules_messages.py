"""Pure alert logic: rule classification, routing, and the phone-readable messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from alerts import (
    AlertMessage,
    classify,
    escalation_targets,
    grafana_link,
    render_markdown,
    render_text,
    render_title,
    route_targets,
)
from core.settings import AlertRoute, AlertsSettings
from tests.alerts.conftest import det
from wire.events import Severity

RULES = AlertsSettings().rules


def test_default_rules_map_detectors_to_alert_severities() -> None:
    """Power cut and release critical, an anomaly a warning, faults maintenance (the names
    are the engine's, from the detector catalogue)."""
    assert classify(det(detector="power_cut", severity=Severity.WARNING), RULES).severity == (
        "critical"
    )
    assert classify(det(detector="release"), RULES).severity == "critical"
    assert classify(det(detector="anomaly"), RULES).severity == "warning"
    fault = classify(det(detector="stuck", severity=Severity.WARNING), RULES)
    assert fault.severity == "maintenance"
    assert fault.group_key == "im/shendong-3/sensor/im/shendong-3/t1-04"


def test_gas_detections_at_one_site_share_a_group_key() -> None:
    """Alarm, release and power cut at one site group together; another site does not."""
    keys = {
        classify(det(device=f"im/shendong-3/s{i}", detector=d), RULES).group_key
        for i, d in enumerate(["threshold_alarm", "release", "power_cut"])
    }
    assert keys == {"im/shendong-3/gas"}
    assert classify(det(device="im/other/s1"), RULES).group_key == "im/other/gas"


def test_unmatched_detector_keeps_its_own_severity() -> None:
    """A detector no rule names falls back to the detection's severity, grouped per site."""
    d = classify(det(detector="urban_enhancement", severity=Severity.INFO), RULES)
    assert (d.rule, d.severity, d.group_key) == ("default", "info", "im/shendong-3/detections")


ROUTES = (
    AlertRoute(name="mines", kinds=("mine",), targets=("dingtalk",), escalation=("lead", "boss")),
    AlertRoute(name="ordos", networks=("ordos",), severities=("critical",), targets=("mail",)),
)


def test_routing_by_kind_network_and_severity() -> None:
    """Every matching route contributes its targets; severities filter."""
    where = {"network": "ordos", "site": "s", "kind": "mine"}
    assert route_targets(ROUTES, severity="critical", **where) == ("dingtalk", "mail")
    assert route_targets(ROUTES, severity="warning", **where) == ("dingtalk",)
    assert route_targets(ROUTES, severity="info", **where) == ()
    city = {"network": "baotou", "site": "s", "kind": "city"}
    assert route_targets(ROUTES, severity="critical", **city) == ()


def test_escalation_adds_the_next_contact_each_level() -> None:
    """Level 1 adds the first contact, level 2 the second, beyond that all of them."""
    where = {"network": "im", "site": "s", "kind": "mine", "severity": "critical"}
    assert escalation_targets(ROUTES, level=1, **where) == ("dingtalk", "lead")
    assert escalation_targets(ROUTES, level=2, **where) == ("dingtalk", "lead", "boss")
    assert escalation_targets(ROUTES, level=5, **where) == ("dingtalk", "lead", "boss")


MSG = AlertMessage(
    alert_id=7,
    event="escalated",
    level=2,
    severity="critical",
    rule="mine_power_cut",
    network="im",
    site="shendong-3",
    kind="mine",
    device_id="im/shendong-3/t0-01",
    metric="ch4_pct_vol",
    detector="power_cut",
    value=1.534,
    threshold=1.5,
    location="T0",
    started_at=datetime(2026, 11, 24, 17, 5, tzinfo=UTC),
    at=datetime(2026, 11, 24, 17, 15, tzinfo=UTC),
    devices=5,
)


def test_message_shows_local_and_utc_time_reading_and_threshold() -> None:
    """Both time zones (the local date rolls over at 16:00 UTC), units and threshold."""
    text = render_text(MSG)
    assert "2026-11-25 01:05:00 北京时间 / 2026-11-24 17:05:00 UTC" in text
    assert "1.534 % vol (阈值 threshold 1.5 % vol)" in text
    assert "im/shendong-3/t0-01 [T0] 等5台 (+4 more)" in text
    assert "甲烷超限断电 power_cut" in text


def test_titles_per_language() -> None:
    """Chinese, English or both, with the escalation level."""
    assert render_title(MSG, "zh") == "🔴 [严重] 未确认升级(2) #7 im/shendong-3"
    assert (
        render_title(MSG, "en") == "🔴 [CRITICAL] Not acknowledged - escalated (2) #7 im/shendong-3"
    )
    resolved = MSG.model_copy(update={"event": "resolved", "resolved_at": MSG.at})
    assert render_title(resolved, "en").startswith("✅ [CRITICAL] Resolved")
    assert "恢复时间 Resolved" in render_text(resolved)


def test_english_only_message_has_no_chinese_labels() -> None:
    """language=en renders English labels only."""
    text = render_markdown(MSG, "en")
    assert "**Reading**" in text
    assert "读数" not in text


def test_grafana_link_targets_the_kind_dashboard_around_the_alert() -> None:
    """The link opens the kind's dashboard filtered to site and device, an hour around it."""
    link = grafana_link(
        "https://grafana.example/",
        {"mine": "ghgwatch-mine"},
        kind="mine",
        network="im",
        site="shendong-3",
        device_id="im/shendong-3/t0-01",
        started_at=MSG.started_at,
    )
    assert link is not None
    assert link.startswith("https://grafana.example/d/ghgwatch-mine?var-network=im&var-site=")
    start_ms = int(MSG.started_at.timestamp() * 1000)
    assert f"from={start_ms - 3_600_000}" in link
    assert f"to={start_ms + 3_600_000}" in link
    assert (
        grafana_link(
            None, {}, kind="mine", network="n", site="s", device_id="d", started_at=MSG.started_at
        )
        is None
    )


def test_text_and_robot_markdown_carry_the_acknowledgement_link() -> None:
    """The on-call person can acknowledge from the message itself (text and markdown)."""
    link = "https://oncall.example/alerts/7/ack"
    msg = MSG.model_copy(update={"ack_url": link})
    assert f"确认 Acknowledge: {link}" in render_text(msg)
    assert f"[确认告警 Acknowledge]({link})" in render_markdown(msg)
    assert "Acknowledge" not in render_text(MSG)


def test_escalation_times_are_per_severity_and_the_old_single_value_is_critical_only() -> None:
    """Defaults escalate warnings and critical alerts; one number keeps its old meaning."""
    assert AlertsSettings().escalate_after_s == {"warning": 1800.0, "critical": 600.0}
    assert AlertsSettings(escalate_after_s=120).escalate_after_s == {"critical": 120.0}
    per = AlertsSettings(escalate_after_s={"warning": 60, "critical": 30})
    assert per.escalate_after_s == {"warning": 60.0, "critical": 30.0}
    with pytest.raises(ValidationError, match="escalate_after_s must be > 0"):
        AlertsSettings(escalate_after_s={"warning": 0})
    with pytest.raises(ValidationError, match="alert_id"):
        AlertsSettings(ack_url_template="https://oncall.example/ack")
