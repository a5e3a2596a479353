"""The alert service end to end: detections on a real Kafka broker -> real receivers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from alerts import AlertFilter, AlertService, AlertStore
from core.settings import Settings
from tests.adapters.loop_helpers import check_survives_commit_timeouts
from tests.alerts.conftest import Receiver, cleared, det, produce, wait_until


def webhook_alerts(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    """alerts-section overrides routing everything to one webhook on the receiver."""
    return {
        "notifiers": [{"name": "oncall", "type": "webhook", "url": receiver.url("/hook")}],
        "routes": [
            {
                "name": "all",
                "severities": ["maintenance", "warning", "critical"],
                "targets": ["oncall"],
            }
        ],
        **extra,
    }


async def count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_detection_on_kafka_notifies_on_call_once_and_resolves(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """OPEN -> one 'opened' webhook; CLEARED + hold time -> alert resolved, one 'resolved'."""
    s = alert_settings(**webhook_alerts(receiver, resolve_hold_s=0.2))
    stop = asyncio.Event()
    service = AlertService(s)
    running(service.run(stop=stop), stop)
    d = det()
    await produce(s, [d])
    (first,) = await wait_until(lambda: receiver.got("/hook"), "opened notification")
    assert first.json()["event"] == "opened"
    await produce(s, [cleared(d)])
    await wait_until(lambda: len(receiver.got("/hook")) >= 2, "resolved notification")
    events = [r.json()["event"] for r in receiver.got("/hook")]
    assert events == ["opened", "resolved"]
    async with AlertStore(s.db_url(), s.alerts, s.db) as store:
        (alert,) = await store.list_alerts(AlertFilter())
    assert alert.state == "resolved"


async def test_burst_of_1000_identical_detections_gives_one_alert_one_notification(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """1,000 copies of one detection on Kafka: one alert, one outbox row, one webhook call."""
    s = alert_settings(**webhook_alerts(receiver))
    await produce(s, [det()] * 1000)
    stop = asyncio.Event()
    service = AlertService(s)
    running(service.run(stop=stop), stop)
    await wait_until(lambda: service.stats.detections >= 1000, "1000 detections consumed")
    await wait_until(lambda: receiver.got("/hook"), "notification")
    url = s.db_url()
    assert await count(url, "SELECT count(*) FROM alerts") == 1
    assert await count(url, "SELECT count(*) FROM alert_outbox") == 1

    async def all_sent() -> bool:
        return await count(url, "SELECT count(*) FROM alert_outbox WHERE status='sent'") == 1

    await wait_until(all_sent, "outbox row sent")
    assert len(receiver.got("/hook")) == 1
    assert service.stats.duplicates == 999


async def test_undecodable_record_is_skipped_and_the_stream_goes_on(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """A garbage record on the detections topic is logged and skipped; later ones are handled."""
    from adapters.kafka import ensure_topics, make_producer

    s = alert_settings(**webhook_alerts(receiver))
    await ensure_topics(s.kafka, s.kafka_bootstrap(), [s.kafka.detections_topic])
    producer = make_producer(s.kafka, s.kafka_bootstrap())
    await producer.start()
    try:
        await producer.send_and_wait(s.kafka.detections_topic, b"{not json", key=b"im/x/y")
    finally:
        await producer.stop()
    await produce(s, [det()])
    stop = asyncio.Event()
    service = AlertService(s)
    running(service.run(stop=stop), stop)
    await wait_until(lambda: receiver.got("/hook"), "notification after garbage")
    assert service.stats.invalid == 1


async def test_silenced_site_records_the_alert_without_notifying(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """A maintenance window keeps the alert in the record and sends nothing; others still go."""
    s = alert_settings(**webhook_alerts(receiver))
    now = datetime.now(UTC)
    async with AlertStore(s.db_url(), s.alerts, s.db) as store:
        await store.create_silence(
            kind="maintenance",
            network="im",
            site="shendong-3",
            device_id=None,
            group=None,
            starts_at=now - timedelta(minutes=1),
            ends_at=now + timedelta(hours=1),
            reason="sensor calibration",
            actor="ops",
        )
    await produce(s, [det(), det(device="im/other-mine/t1")])
    stop = asyncio.Event()
    service = AlertService(s)
    running(service.run(stop=stop), stop)
    (req,) = await wait_until(lambda: receiver.got("/hook"), "the unsilenced notification")
    await wait_until(lambda: service.stats.detections >= 2, "both detections handled")
    assert req.json()["alert"]["site"] == "other-mine"
    url = s.db_url()
    assert await count(url, "SELECT count(*) FROM alerts") == 2
    assert await count(url, "SELECT count(*) FROM alert_outbox WHERE status='suppressed'") == 1


def _service_env(s: Settings, receiver: Receiver, *, dispatch: bool) -> dict[str, str]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    alerts = webhook_alerts(receiver, dispatch_enabled=dispatch, group_id=s.alerts.group_id)
    alerts.update(dispatch_poll_s=0.2, tick_s=0.2, lease_s=30.0, session_timeout_ms=6000)
    env.update(
        GHGWATCH_KAFKA__BOOTSTRAP=s.kafka_bootstrap(),
        GHGWATCH_KAFKA__DETECTIONS_TOPIC=s.kafka.detections_topic,
        GHGWATCH_DB__URL=s.db_url(),
        GHGWATCH_ALERTS=json.dumps(alerts),
        GHGWATCH_METRICS__ENABLED="false",
    )
    return env


@pytest.mark.slow
async def test_killed_between_storing_and_notifying_notifies_exactly_once_after_restart(
    alert_settings: Callable[..., Settings], receiver: Receiver, tmp_path: Path
) -> None:
    """kill -9 after the alert is stored but before it is sent; the restart sends it once."""
    s = alert_settings(**webhook_alerts(receiver))
    url = s.db_url()
    cli = [str(Path(sys.executable).parent / "ghgwatch")]
    log = (tmp_path / "svc.log").open("wb")
    # 1. A service that stores but does not send (the crash window), killed with SIGKILL.
    first = subprocess.Popen(
        [*cli, "alert-service"],
        env=_service_env(s, receiver, dispatch=False),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await produce(s, [det()])

        async def stored() -> bool:
            return await count(url, "SELECT count(*) FROM alert_outbox") == 1

        await wait_until(stored, "alert and outbox row stored", timeout_s=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert receiver.got("/hook") == []
    # 2. Restart with sending on; the detection may be redelivered (offset) - still one alert.
    second = subprocess.Popen(
        [*cli, "alert-service"],
        env=_service_env(s, receiver, dispatch=True),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until(lambda: receiver.got("/hook"), "notification after restart", 30)

        async def sent() -> bool:
            return await count(url, "SELECT count(*) FROM alert_outbox WHERE status='sent'") == 1

        await wait_until(sent, "outbox row marked sent")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
        log.close()
    assert second.returncode == 0, (tmp_path / "svc.log").read_text()[-2000:]
    assert len(receiver.got("/hook")) == 1
    assert await count(url, "SELECT count(*) FROM alerts") == 1


async def test_unacknowledged_critical_alert_is_escalated_by_the_running_service(
    alert_settings: Callable[..., Settings],
    receiver: Receiver,
    running: Callable[..., asyncio.Task[Any]],
) -> None:
    """The service's sweeper re-notifies on-call and tells the next contact, once per level."""
    s = alert_settings(
        notifiers=[
            {"name": "oncall", "type": "webhook", "url": receiver.url("/hook")},
            {"name": "lead", "type": "webhook", "url": receiver.url("/lead")},
        ],
        routes=[{"name": "all", "targets": ["oncall"], "escalation": ["lead"]}],
        escalate_after_s=0.3,
        max_escalations=1,
    )
    stop = asyncio.Event()
    running(AlertService(s).run(stop=stop), stop)
    await produce(s, [det()])
    (lead,) = await wait_until(lambda: receiver.got("/lead"), "escalation to the lead")
    assert lead.json()["event"] == "escalated"
    assert lead.json()["alert"]["level"] == 1
    await wait_until(lambda: len(receiver.got("/hook")) >= 2, "on-call re-notified")
    assert [r.json()["event"] for r in receiver.got("/hook")] == ["opened", "escalated"]


async def test_commits_timing_out_do_not_stop_the_alert_service(
    alert_settings: Callable[..., Settings], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits Kafka does not take in time are retried through the checkpoint; the alert is
    still opened and notified, and the offsets are committed once Kafka answers."""
    s = alert_settings(**webhook_alerts(receiver))
    service = AlertService(s)

    async def feed() -> int:
        await produce(s, [det(), det(device="im/other-mine/t1")])
        return 2

    await check_survives_commit_timeouts(
        monkeypatch,
        s,
        service,
        group=s.alerts.group_id,
        topics=[s.kafka.detections_topic],
        feed=feed,
    )
    assert service.stats.detections == 2
    assert await count(s.db_url(), "SELECT count(*) FROM alerts") == 2


STALL_S = 30.0  # a stalled receiver answers after this at the latest (released at the kill)


@pytest.mark.slow
async def test_killed_mid_send_dingtalk_pages_at_most_once_and_webhook_once_per_key(
    alert_settings: Callable[..., Settings], receiver: Receiver, tmp_path: Path
) -> None:
    """kill -9 while both receivers hold the request unanswered (between send and mark sent).

    The DingTalk robot cannot de-duplicate: the restart does not send again, the row is
    ``unknown`` with an alert event. The webhook is sent again with the same key: a receiver
    honouring the key sees it once.
    """
    import json
    import threading

    release = threading.Event()

    def stall_first(req: Any) -> tuple[int, Any]:
        if len(receiver.got(req.path)) == 1:
            release.wait(STALL_S)  # the service is killed while this request is in flight
        if req.path.startswith("/robot"):
            return 200, {"errcode": 0, "errmsg": "ok"}
        return 200, {}

    receiver.responder = stall_first
    s = alert_settings()
    url = s.db_url()
    alerts = {
        "notifiers": [
            {"name": "oncall", "type": "webhook", "url": receiver.url("/hook")},
            {"name": "dt", "type": "dingtalk", "url": receiver.url("/robot/send?access_token=a")},
        ],
        "routes": [{"name": "all", "targets": ["oncall", "dt"]}],
        "group_id": s.alerts.group_id,
        "dispatch_poll_s": 0.2,
        "tick_s": 0.2,
        "lease_s": 1.5,
        "send_timeout_s": STALL_S,
        "session_timeout_ms": 6000,
    }
    env = _service_env(s, receiver, dispatch=True)
    env["GHGWATCH_ALERTS"] = json.dumps(alerts)
    cli = [str(Path(sys.executable).parent / "ghgwatch"), "alert-service"]
    log = (tmp_path / "svc.log").open("wb")
    first = subprocess.Popen(cli, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await produce(s, [det()])
        await wait_until(
            lambda: receiver.got("/hook") and receiver.got("/robot"), "both sends in flight", 30
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        release.set()
    second = subprocess.Popen(cli, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        async def settled() -> bool:
            open_rows = "SELECT count(*) FROM alert_outbox WHERE status IN ('pending', 'sending')"
            return await count(url, "SELECT count(*) FROM alert_outbox") == 2 and (
                await count(url, open_rows) == 0
            )

        await wait_until(settled, "both outbox rows settled after the restart", 30)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(20)
        log.close()
    assert second.returncode == 0, (tmp_path / "svc.log").read_text()[-2000:]
    assert len(receiver.got("/robot")) == 1  # at most once: not sent again
    keys = [r.headers["idempotency-key"] for r in receiver.got("/hook")]
    assert len(keys) == 2
    assert len(set(keys)) == 1
    async with AlertStore(url, s.alerts, s.db) as store:
        (alert,) = await store.list_alerts(AlertFilter())
        detail = await store.get_alert(alert.alert_id)
    status = {n.target: n.status for n in detail.notifications}
    assert status == {"oncall": "sent", "dt": "unknown"}
    unknown = [e for e in detail.events if e.event == "notification_unknown"]
    assert len(unknown) == 1
    assert unknown[0].detail["target"] == "dt"
