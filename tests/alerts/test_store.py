"""Alert lifecycle in the real database: de-dup, grouping, hysteresis, escalation, silences."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from alerts import AlertFilter, AlertNotFound, AlertStore, InvalidTransition
from core.settings import Settings
from tests.alerts.conftest import cleared, det
from wire.events import Severity

T0 = datetime(2026, 11, 25, 2, 31, tzinfo=UTC)

NOTIFIERS = [
    {"name": "oncall", "type": "webhook", "url": "http://127.0.0.1:9/hook"},
    {"name": "lead", "type": "webhook", "url": "http://127.0.0.1:9/lead"},
    {"name": "boss", "type": "webhook", "url": "http://127.0.0.1:9/boss"},
]
ROUTES = [
    {
        "name": "all",
        "severities": ["maintenance", "warning", "critical"],
        "targets": ["oncall"],
        "escalation": ["lead", "boss"],
    }
]


@pytest.fixture
def make_store(
    alert_settings: Callable[..., Settings],
) -> Callable[..., AsyncIterator[AlertStore]]:
    """Open an AlertStore on the test database with routes to three webhook targets."""

    def build(**alerts: Any) -> AsyncIterator[AlertStore]:
        alerts.setdefault("notifiers", NOTIFIERS)
        alerts.setdefault("routes", ROUTES)
        s = alert_settings(**alerts)

        async def gen() -> AsyncIterator[AlertStore]:
            async with AlertStore(s.db_url(), s.alerts, s.db) as store:
                yield store

        return gen()

    return build


async def rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def store(make_store: Callable[..., AsyncIterator[AlertStore]]) -> AsyncIterator[AlertStore]:
    """A store with the default test routes."""
    async for s in make_store():
        yield s


async def test_thousand_identical_detections_make_one_alert_and_one_notification(
    store: AlertStore, alert_db: str
) -> None:
    """1,000 copies of one detection (redelivery, replay) give one alert and one outbox row."""
    d = det()
    for _ in range(10):
        await store.apply_detections([d] * 100, T0)
    alerts = await store.list_alerts(AlertFilter())
    assert len(alerts) == 1
    outbox = await rows(alert_db, "SELECT target, event FROM alert_outbox")
    assert [(r["target"], r["event"]) for r in outbox] == [("oncall", "opened")]


async def test_repeated_detections_of_one_device_join_its_alert(store: AlertStore) -> None:
    """New detection ids for the same condition join the active alert: no second notification."""
    for i in range(20):
        await store.apply_detections([det(started_at=T0 + timedelta(seconds=10 * i))], T0)
    alerts = await store.list_alerts(AlertFilter())
    assert len(alerts) == 1
    detail = await store.get_alert(alerts[0].alert_id)
    assert len(detail.detections) == 20
    assert [n.event for n in detail.notifications] == ["opened"]


async def test_release_seen_by_five_sensors_is_one_alert(store: AlertStore) -> None:
    """Five sensors at one site alarming together make one alert naming five devices."""
    batch = [
        det(device=f"im/shendong-3/s{i}", detector="anomaly", severity=Severity.WARNING)
        for i in range(5)
    ]
    await store.apply_detections(batch, T0)
    (alert,) = await store.list_alerts(AlertFilter())
    assert alert.severity == "warning"
    detail = await store.get_alert(alert.alert_id)
    assert {d.device_id for d in detail.detections} == {f"im/shendong-3/s{i}" for i in range(5)}
    assert len(detail.notifications) == 1
    assert detail.notifications[0].event == "opened"


async def test_other_site_gets_its_own_alert(store: AlertStore) -> None:
    """Grouping is per site: the same detector at two sites makes two alerts."""
    await store.apply_detections([det(device="im/site-a/t1"), det(device="im/site-b/t1")], T0)
    assert len(await store.list_alerts(AlertFilter())) == 2


async def test_power_cut_raises_a_warning_alert_to_critical_and_notifies_again(
    make_store: Callable[..., AsyncIterator[AlertStore]],
) -> None:
    """An anomaly is a warning; a power cut at the same site raises it to critical once."""
    async for store in make_store(escalate_after_s=600.0):  # the old form: critical only
        await _warning_raised_to_critical(store)


async def _warning_raised_to_critical(store: AlertStore) -> None:
    await store.apply_detections(
        [det(detector="anomaly", severity=Severity.WARNING, value=0.9)], T0
    )
    (alert,) = await store.list_alerts(AlertFilter())
    assert alert.severity == "warning"
    assert alert.next_escalation_at is None  # warnings do not escalate (in this store)
    await store.apply_detections([det(device="im/shendong-3/t0-01", value=1.7)], T0)
    await store.apply_detections([det(device="im/shendong-3/t0-02", value=1.8)], T0)
    (alert,) = await store.list_alerts(AlertFilter())
    assert alert.severity == "critical"
    assert alert.next_escalation_at is not None
    detail = await store.get_alert(alert.alert_id)
    assert [n.event for n in detail.notifications] == ["opened", "severity_raised"]


async def test_sensor_fault_is_a_maintenance_ticket_per_device(store: AlertStore) -> None:
    """Stuck sensors become maintenance alerts, one per device, separate from gas alerts."""
    await store.apply_detections(
        [
            det(device="im/mine-1/s1", detector="stuck", severity=Severity.WARNING),
            det(device="im/mine-1/s2", detector="stuck", severity=Severity.WARNING),
            det(device="im/mine-1/s1", detector="power_cut"),
        ],
        T0,
    )
    alerts = await store.list_alerts(AlertFilter())
    by_sev = sorted(a.severity for a in alerts)
    assert by_sev == ["critical", "maintenance", "maintenance"]


async def test_alert_resolves_only_after_every_detection_cleared_and_the_hold_time(
    make_store: Callable[..., AsyncIterator[AlertStore]],
) -> None:
    """Auto-resolve waits for the last detection to clear, then for resolve_hold_s."""
    async for store in make_store(resolve_hold_s=60.0):
        a, b = det(device="im/m/s1"), det(device="im/m/s2")
        await store.apply_detections([a, b], T0)
        await store.apply_detections([cleared(a)], T0 + timedelta(seconds=5))
        (alert,) = await store.list_alerts(AlertFilter())
        assert alert.condition_active
        await store.apply_detections([cleared(b)], T0 + timedelta(seconds=10))
        (alert,) = await store.list_alerts(AlertFilter())
        assert not alert.condition_active
        assert (await store.sweep(T0 + timedelta(seconds=69))).resolved == 0
        assert (await store.sweep(T0 + timedelta(seconds=70))).resolved == 1
        (alert,) = await store.list_alerts(AlertFilter())
        assert alert.state == "resolved"
        assert alert.resolved_by == "auto"
        detail = await store.get_alert(alert.alert_id)
        assert [n.event for n in detail.notifications] == ["opened", "resolved"]


async def test_detection_during_hold_time_keeps_the_alert_open(
    make_store: Callable[..., AsyncIterator[AlertStore]],
) -> None:
    """Hysteresis: a flapping sensor re-opening within the hold time does not re-alert."""
    async for store in make_store(resolve_hold_s=60.0):
        a = det()
        await store.apply_detections([a], T0)
        await store.apply_detections([cleared(a)], T0 + timedelta(seconds=1))
        again = det(started_at=T0 + timedelta(seconds=30))
        await store.apply_detections([again], T0 + timedelta(seconds=30))
        assert (await store.sweep(T0 + timedelta(seconds=120))).resolved == 0
        (alert,) = await store.list_alerts(AlertFilter())
        assert alert.state == "open"
        assert alert.condition_active
        detail = await store.get_alert(alert.alert_id)
        assert [n.event for n in detail.notifications] == ["opened"]


async def test_unacknowledged_critical_alert_escalates_to_the_next_contact(
    make_store: Callable[..., AsyncIterator[AlertStore]], alert_db: str
) -> None:
    """Each escalation re-notifies on-call and adds the next contact, up to max_escalations."""
    async for store in make_store(escalate_after_s=300.0, max_escalations=2):
        await store.apply_detections([det()], T0)
        assert (await store.sweep(T0 + timedelta(seconds=299))).escalated == 0
        assert (await store.sweep(T0 + timedelta(seconds=300))).escalated == 1
        assert (await store.sweep(T0 + timedelta(seconds=600))).escalated == 1
        assert (await store.sweep(T0 + timedelta(seconds=5000))).escalated == 0
        got = await rows(alert_db, "SELECT event, target FROM alert_outbox ORDER BY outbox_id")
        assert [(r["event"], r["target"]) for r in got] == [
            ("opened", "oncall"),
            ("escalated", "oncall"),
            ("escalated", "lead"),
            ("escalated", "oncall"),
            ("escalated", "lead"),
            ("escalated", "boss"),
        ]


async def test_acknowledging_stops_escalation(
    make_store: Callable[..., AsyncIterator[AlertStore]],
) -> None:
    """An acknowledged alert is never escalated, and the history records who acknowledged."""
    async for store in make_store(escalate_after_s=300.0):
        await store.apply_detections([det()], T0)
        (alert,) = await store.list_alerts(AlertFilter())
        acked = await store.acknowledge(alert.alert_id, "zhang.wei", "on my way", T0)
        assert acked.state == "acknowledged"
        assert acked.next_escalation_at is None
        assert (await store.sweep(T0 + timedelta(hours=5))).escalated == 0
        detail = await store.get_alert(alert.alert_id)
        ack = [e for e in detail.events if e.event == "acknowledged"]
        assert ack[0].actor == "zhang.wei"
        assert ack[0].detail == {"note": "on my way"}
        assert [n.event for n in detail.notifications] == ["opened"]


async def test_silence_suppresses_notifications_but_keeps_the_record(
    store: AlertStore, alert_db: str
) -> None:
    """During a calibration window the alert is stored, its notification marked suppressed."""
    silence = await store.create_silence(
        kind="maintenance",
        network="im",
        site="shendong-3",
        device_id=None,
        group=None,
        starts_at=T0 - timedelta(minutes=5),
        ends_at=T0 + timedelta(hours=1),
        reason="CH4 sensor calibration",
        actor="ops",
    )
    await store.apply_detections([det()], T0)
    (alert,) = await store.list_alerts(AlertFilter())
    detail = await store.get_alert(alert.alert_id)
    assert [(n.event, n.status) for n in detail.notifications] == [("opened", "suppressed")]
    assert any(
        e.event == "notification_suppressed" and e.detail["silence_id"] == silence.silence_id
        for e in detail.events
    )
    # Nothing is due for sending.
    assert await store.claim_outbox(10, T0 + timedelta(minutes=1)) == []
    # Another site is not silenced.
    await store.apply_detections([det(device="im/other/t1")], T0)
    pending = await rows(alert_db, "SELECT count(*) AS n FROM alert_outbox WHERE status='pending'")
    assert pending[0]["n"] == 1


async def test_silencing_an_alert_drops_its_queued_notifications(store: AlertStore) -> None:
    """Silencing an alert marks its not-yet-sent notifications suppressed and later ones too."""
    await store.apply_detections([det(detector="anomaly", severity=Severity.WARNING)], T0)
    (alert,) = await store.list_alerts(AlertFilter())
    s = await store.silence_alert(alert.alert_id, "li.na", 600, "known issue", T0)
    assert s.alert_id == alert.alert_id
    await store.apply_detections([det(device="im/shendong-3/t0-9")], T0)  # raises to critical
    detail = await store.get_alert(alert.alert_id)
    assert [(n.event, n.status) for n in detail.notifications] == [
        ("opened", "suppressed"),
        ("severity_raised", "suppressed"),
    ]
    assert detail.alert.severity == "critical"


async def test_on_call_actions_refuse_impossible_transitions(store: AlertStore) -> None:
    """Unknown ids and acknowledging or resolving a resolved alert are refused clearly."""
    with pytest.raises(AlertNotFound):
        await store.acknowledge(999, "x", None, T0)
    await store.apply_detections([det()], T0)
    (alert,) = await store.list_alerts(AlertFilter())
    resolved = await store.resolve(alert.alert_id, "li.na", "false alarm", T0)
    assert resolved.state == "resolved"
    with pytest.raises(InvalidTransition, match="already resolved"):
        await store.acknowledge(alert.alert_id, "x", None, T0)
    with pytest.raises(InvalidTransition):
        await store.resolve(alert.alert_id, "x", None, T0)
    # After a manual resolve a new detection at the site opens a new alert.
    await store.apply_detections([det(started_at=T0 + timedelta(minutes=1))], T0)
    assert len(await store.list_alerts(AlertFilter(active=True))) == 1


async def test_cleared_record_for_unknown_detection_is_ignored(store: AlertStore) -> None:
    """A CLEARED without its OPEN (consumer started late) changes nothing."""
    result = await store.apply_detections([cleared(det())], T0)
    assert result.duplicates == 1
    assert await store.list_alerts(AlertFilter()) == []


WARNING_AT = "im/site-w/t1"
CRITICAL_AT = "im/site-c/t1"


def _two_alerts() -> list[Any]:
    """A warning (rising trend) at one site and a critical alert (power cut) at another."""
    return [
        det(device=WARNING_AT, detector="rising_trend", severity=Severity.WARNING, value=0.9),
        det(device=CRITICAL_AT),
    ]


async def test_escalation_follows_severity_warning_after_its_time_critical_after_its(
    make_store: Callable[..., AsyncIterator[AlertStore]], alert_db: str
) -> None:
    """Each severity escalates after its own time, to the route's next contact."""
    times = {"warning": 900.0, "critical": 300.0}
    async for store in make_store(escalate_after_s=times, max_escalations=1):
        await store.apply_detections(_two_alerts(), T0)
        assert (await store.sweep(T0 + timedelta(seconds=299))).escalated == 0
        first = await store.sweep(T0 + timedelta(seconds=300))
        assert first.escalated_by_severity == {"critical": 1}
        assert (await store.sweep(T0 + timedelta(seconds=899))).escalated == 0
        second = await store.sweep(T0 + timedelta(seconds=900))
        assert second.escalated_by_severity == {"warning": 1}
        assert (await store.sweep(T0 + timedelta(hours=5))).escalated == 0  # max reached
        got = await rows(
            alert_db,
            """
            SELECT a.severity, o.target FROM alert_outbox o JOIN alerts a USING (alert_id)
            WHERE o.event = 'escalated' ORDER BY o.outbox_id
            """,
        )
        assert [(r["severity"], r["target"]) for r in got] == [
            ("critical", "oncall"),
            ("critical", "lead"),
            ("warning", "oncall"),
            ("warning", "lead"),
        ]


async def test_acknowledged_warning_alert_is_not_escalated(
    make_store: Callable[..., AsyncIterator[AlertStore]],
) -> None:
    """Acknowledging stops a warning's escalation; the unacknowledged critical one goes on."""
    async for store in make_store():  # default times: warnings escalate too
        await store.apply_detections(_two_alerts(), T0)
        (warning,) = await store.list_alerts(AlertFilter(severity="warning"))
        assert warning.next_escalation_at is not None
        await store.acknowledge(warning.alert_id, "zhang.wei", None, T0)
        swept = await store.sweep(T0 + timedelta(hours=5))
        assert swept.escalated_by_severity == {"critical": 1}
        detail = await store.get_alert(warning.alert_id)
        assert [n.event for n in detail.notifications] == ["opened"]


async def test_every_paging_notification_carries_the_acknowledgement_link(
    make_store: Callable[..., AsyncIterator[AlertStore]], alert_db: str
) -> None:
    """Opened and escalated messages link to the alert's acknowledgement; resolved ones not."""
    template = "https://oncall.example/alerts/{alert_id}/ack?src=page"
    async for store in make_store(ack_url_template=template, escalate_after_s=300.0):
        await store.apply_detections([det()], T0)
        await store.sweep(T0 + timedelta(seconds=300))
        (alert,) = await store.list_alerts(AlertFilter())
        await store.resolve(alert.alert_id, "zhang.wei", None, T0 + timedelta(seconds=400))
        got = await rows(alert_db, "SELECT event, payload FROM alert_outbox ORDER BY outbox_id")
        link = f"https://oncall.example/alerts/{alert.alert_id}/ack?src=page"
        by_event = {r["event"]: json.loads(r["payload"])["ack_url"] for r in got}
        assert by_event == {"opened": link, "escalated": link, "resolved": None}
