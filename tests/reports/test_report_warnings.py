"""Orange and red warnings as detections: one per source, quarter and level; a changed level
opens the new one and clears the old; the default rule pages, a rule of one's own can make
red critical."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts import classify
from core.settings import AlertRule, AlertsSettings
from reports import Quarter, SourceWarning
from reports.store import PublishedAlert
from reports.warnings_out import plan_alerts
from wire.events import DetectionState

Q = Quarter(2026, 3)
TZ = "Asia/Shanghai"
NOW = datetime(2026, 10, 5, tzinfo=UTC)


def _w(source_id: str, level: str, source_type: str = "mine") -> SourceWarning:
    return SourceWarning(source_type=source_type, source_id=source_id, level=level)  # type: ignore[arg-type]


def test_only_orange_and_red_not_yet_raised_are_opened() -> None:
    ws = [_w("a/m1", "red"), _w("a/m2", "orange"), _w("a/m3", "yellow"), _w("a/m4", "green")]
    opens, clears = plan_alerts(Q, TZ, ws, [], NOW)
    assert [(a.source_id, a.level) for a, _ in opens] == [("a/m1", "red"), ("a/m2", "orange")]
    assert clears == []
    again, clears = plan_alerts(Q, TZ, ws, [a for a, _ in opens], NOW)
    assert again == []
    assert clears == []


def test_a_changed_level_opens_the_new_and_clears_the_old_with_the_same_id() -> None:
    (first, rec), = plan_alerts(Q, TZ, [_w("a/m1", "orange")], [], NOW)[0]  # fmt: skip
    opens, clears = plan_alerts(Q, TZ, [_w("a/m1", "red")], [first], NOW)
    assert [(a.level, r.metric) for a, r in opens] == [("red", "warning_level_red")]
    ((cleared_id, cleared),) = clears
    assert cleared_id == first.detection_id == cleared.detection_id == rec.detection_id
    assert cleared.state is DetectionState.CLEARED
    assert cleared.ended_at == NOW
    _, clears = plan_alerts(Q, TZ, [_w("a/m1", "yellow")], [first], NOW)
    assert len(clears) == 1  # dropping below orange clears too


def test_default_rule_pages_one_alert_per_source_quarter_and_level() -> None:
    ((_, orange), (_, red)) = plan_alerts(  # sorted by source type: city, mine
        Q, TZ, [_w("ordos-coal/buertai", "red"), _w("baotou", "orange", "city")], [], NOW
    )[0]
    rules = AlertsSettings().rules
    d = classify(red, rules)
    assert (d.rule, d.severity) == ("quarterly", "warning")
    assert d.group_key == (
        "ordos-coal/buertai/quarterly/quarterly/2026Q3/mine/ordos-coal/buertai/red"
    )
    assert classify(orange, rules).group_key.startswith("baotou/baotou/quarterly/")
    critical_red = AlertRule(name="red", detectors=("quarterly_warning",),
                             metrics=("warning_level_red",), severity="critical",
                             group="quarterly", group_by="device")  # fmt: skip
    assert classify(red, (critical_red, *rules)).severity == "critical"
    assert classify(orange, (critical_red, *rules)).severity == "warning"
    assert red.started_at == Q.end(TZ)
    assert isinstance(PublishedAlert("x", "mine", "a", "red"), PublishedAlert)
