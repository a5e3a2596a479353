"""Orange and red warnings as detections: one per source, quarter and level while the level
holds; a changed level opens the new one and clears the old; a return to an earlier level is
a new warning (its id names the revision that changed the level); the default rule pages, a
rule of one's own can make red critical."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts import classify
from core.settings import AlertRule, AlertsSettings
from reports import Quarter, SourceWarning
from reports.store import PublishedAlert
from reports.warnings_out import plan_alerts, warning_id
from wire.events import DetectionState

Q = Quarter(2026, 3)
TZ = "Asia/Shanghai"
NOW = datetime(2026, 10, 5, tzinfo=UTC)


def _w(source_id: str, level: str, source_type: str = "mine") -> SourceWarning:
    return SourceWarning(source_type=source_type, source_id=source_id, level=level)  # type: ignore[arg-type]


def _since(ws: list[SourceWarning], revision: int = 1) -> dict[tuple[str, str], int]:
    return {(w.source_type, w.source_id): revision for w in ws}


def test_only_orange_and_red_not_yet_raised_are_opened() -> None:
    ws = [_w("a/m1", "red"), _w("a/m2", "orange"), _w("a/m3", "yellow"), _w("a/m4", "green")]
    opens, clears = plan_alerts(Q, TZ, ws, _since(ws), [], NOW)
    assert [(a.source_id, a.level) for a, _ in opens] == [("a/m1", "red"), ("a/m2", "orange")]
    assert clears == []
    again, clears = plan_alerts(Q, TZ, ws, _since(ws), [a for a, _ in opens], NOW)
    assert again == []
    assert clears == []


def test_a_changed_level_opens_the_new_and_clears_the_old_with_the_same_id() -> None:
    orange = [_w("a/m1", "orange")]
    (first, rec), = plan_alerts(Q, TZ, orange, _since(orange, 1), [], NOW)[0]  # fmt: skip
    red = [_w("a/m1", "red")]
    opens, clears = plan_alerts(Q, TZ, red, _since(red, 2), [first], NOW)
    assert [(a.level, r.metric) for a, r in opens] == [("red", "warning_level_red")]
    ((cleared_id, cleared),) = clears
    assert cleared_id == first.detection_id == cleared.detection_id == rec.detection_id
    assert cleared.state is DetectionState.CLEARED
    assert cleared.ended_at == NOW
    yellow = [_w("a/m1", "yellow")]
    _, clears = plan_alerts(Q, TZ, yellow, _since(yellow, 2), [first], NOW)
    assert len(clears) == 1  # dropping below orange clears too


def test_a_return_to_an_earlier_level_is_a_new_warning_with_a_new_id() -> None:
    """orange (r1) -> red (r2) -> orange (r3): r3's orange is not r1's (whose id the alert
    service has seen and would drop); the cleared red keeps the id it was published under."""
    orange, red = [_w("a/m1", "orange")], [_w("a/m1", "red")]
    ((first, _),), _ = plan_alerts(Q, TZ, orange, _since(orange, 1), [], NOW)
    ((second, _),), _ = plan_alerts(Q, TZ, red, _since(red, 2), [first], NOW)
    opens, clears = plan_alerts(Q, TZ, orange, _since(orange, 3), [second], NOW)
    ((third, rec),) = opens
    assert third.level == "orange"
    assert third.detection_id == rec.detection_id == warning_id(Q, TZ, "mine", "a/m1", "orange", 3)
    assert len({first.detection_id, second.detection_id, third.detection_id}) == 3
    assert rec.device_id == "quarterly/2026Q3/mine/a/m1/orange"  # same alert group as r1's
    assert [(i, r.detection_id) for i, r in clears] == [(second.detection_id,) * 2]


def test_default_rule_pages_one_alert_per_source_quarter_and_level() -> None:
    ws = [_w("ordos-coal/buertai", "red"), _w("baotou", "orange", "city")]
    ((_, orange), (_, red)) = plan_alerts(Q, TZ, ws, _since(ws), [], NOW)[0]  # city, mine
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
