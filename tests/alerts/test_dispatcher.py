"""The outbox dispatcher against real receivers: retries, give-up, crash recovery, Grafana."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from alerts import (
    AlertFilter,
    AlertStore,
    Dispatcher,
    GrafanaAnnotator,
    Notifier,
    backoff_s,
    build_notifiers,
)
from core.settings import Settings
from tests.alerts.conftest import Captured, Receiver, cleared, det, wait_until


@dataclass
class Rig:
    """A store, a dispatcher running in the background and the receiver it posts to."""

    store: AlertStore
    dispatcher: Dispatcher
    wake: asyncio.Event


@pytest.fixture
async def rig_factory(
    alert_settings: Callable[..., Settings], receiver: Receiver
) -> AsyncIterator[Callable[..., Any]]:
    """Build rigs whose webhook target posts to the test receiver; all stopped at the end."""
    async with AsyncExitStack() as stack:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def build(*, start: bool = True, **alerts: Any) -> Rig:
            alerts.setdefault(
                "notifiers", [{"name": "oncall", "type": "webhook", "url": receiver.url("/hook")}]
            )
            alerts.setdefault("routes", [{"name": "r", "targets": ["oncall"]}])
            s = alert_settings(**alerts)
            store = await stack.enter_async_context(AlertStore(s.db_url(), s.alerts, s.db))
            http = await stack.enter_async_context(httpx.AsyncClient())
            notifiers: dict[str, Notifier] = dict(build_notifiers(s.alerts, http, s.mqtt_url()))
            if s.alerts.grafana_url:
                notifiers["grafana"] = GrafanaAnnotator(s.alerts)
            wake = asyncio.Event()
            dispatcher = Dispatcher(store, notifiers, s.alerts, wake)
            if start:
                tasks.append(asyncio.create_task(dispatcher.run(stop)))
            return Rig(store, dispatcher, wake)

        try:
            yield build
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


def test_backoff_grows_and_is_capped() -> None:
    """Capped exponential backoff: 1, 2, 4, ... never above the cap."""
    assert [backoff_s(n, 1.0, 10.0, jitter=0) for n in (1, 2, 3, 4, 5, 9)] == [
        1.0,
        2.0,
        4.0,
        8.0,
        10.0,
        10.0,
    ]
    assert all(0.8 <= backoff_s(1, 1.0, 10.0) <= 1.2 for _ in range(100))


async def _statuses(store: AlertStore) -> dict[str, int]:
    return await store.outbox_status_counts()


async def test_failed_sends_are_retried_and_every_attempt_is_recorded(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """Two 503s then 200: the notification is sent on the third attempt, all three recorded."""
    answers = iter([503, 503])
    receiver.responder = lambda req: (next(answers, 200), {})
    rig = await rig_factory()
    await rig.store.apply_detections([det()], datetime.now(UTC))
    rig.wake.set()
    await wait_until(lambda: _statuses(rig.store), "outbox row")
    await wait_until(lambda: _sent_only(rig.store), "notification sent after retries")
    (alert,) = await rig.store.list_alerts(AlertFilter())
    (n,) = (await rig.store.get_alert(alert.alert_id)).notifications
    assert n.status == "sent"
    assert [a.ok for a in n.history] == [False, False, True]
    assert "HTTP 503" in (n.history[0].error or "")
    assert len(receiver.got("/hook")) == 3
    assert len({r.headers["idempotency-key"] for r in receiver.got("/hook")}) == 1


async def _sent_only(store: AlertStore) -> bool:
    return await store.outbox_status_counts() == {"sent": 1}


async def test_permanent_refusal_is_not_retried(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """A 400 marks the notification failed after one attempt."""
    receiver.responder = lambda req: (400, {"error": "bad"})
    rig = await rig_factory()
    await rig.store.apply_detections([det()], datetime.now(UTC))
    rig.wake.set()

    async def failed() -> bool:
        return await rig.store.outbox_status_counts() == {"failed": 1}

    await wait_until(failed, "failed status")
    assert len(receiver.got("/hook")) == 1


async def test_dispatcher_gives_up_after_max_attempts(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """A receiver that keeps failing gets exactly max_attempts tries, then the row fails."""
    receiver.responder = lambda req: (500, {})
    rig = await rig_factory(max_attempts=3)
    await rig.store.apply_detections([det()], datetime.now(UTC))
    rig.wake.set()

    async def failed() -> bool:
        return await rig.store.outbox_status_counts() == {"failed": 1}

    await wait_until(failed, "failed status")
    assert len(receiver.got("/hook")) == 3


async def test_row_claimed_by_a_crashed_sender_is_sent_once_after_its_lease(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """Mark-before-send: a sender that claimed a row and died leaves it to be sent once later."""
    crashed = await rig_factory(start=False, lease_s=0.5)
    await crashed.store.apply_detections([det()], datetime.now(UTC))
    claimed = await crashed.store.claim_outbox(10, datetime.now(UTC))
    assert len(claimed) == 1  # ... and the sender "dies" here, before sending
    assert await crashed.store.claim_outbox(10, datetime.now(UTC)) == []  # still leased
    survivor = await rig_factory(lease_s=0.5)
    survivor.wake.set()
    await wait_until(lambda: _sent_only(survivor.store), "sent after lease expiry")
    assert len(receiver.got("/hook")) == 1
    # The dead sender's late report cannot overwrite the newer claim's result.
    status = await crashed.store.finish_outbox(
        claimed[0],
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
        ok=False,
        error="late",
        retry_at=datetime.now(UTC),
    )
    assert status == "stale"
    assert await survivor.store.outbox_status_counts() == {"sent": 1}


def grafana_responder(req: Captured) -> tuple[int, Any]:
    """Answer like Grafana's annotations API."""
    if req.method == "POST" and req.path == "/api/annotations":
        return 200, {"id": 77, "message": "Annotation added"}
    if req.method == "PUT" and req.path == "/api/annotations/77":
        return 200, {"message": "Annotation updated"}
    return 404, {"message": "not found"}


async def test_grafana_gets_an_annotation_at_start_and_a_region_at_the_end(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """With a Grafana URL, alert start adds an annotation; the end turns it into a region."""
    receiver.responder = grafana_responder
    rig = await rig_factory(
        grafana_url=f"http://127.0.0.1:{receiver.port}",
        grafana_token="glsa_test",
        resolve_hold_s=0.0,
        routes=[],
    )
    d = det()
    now = datetime.now(UTC)
    await rig.store.apply_detections([d], now)
    rig.wake.set()
    await wait_until(lambda: receiver.got("/api/annotations"), "annotation added")
    (alert,) = await rig.store.list_alerts(AlertFilter())

    async def has_annotation() -> bool:
        detail = await rig.store.get_alert(alert.alert_id)
        return all(n.status == "sent" for n in detail.notifications)

    await wait_until(has_annotation, "annotation id stored")
    await rig.store.apply_detections([cleared(d)], now)
    await rig.store.sweep(now + timedelta(seconds=1))
    rig.wake.set()
    await wait_until(lambda: receiver.got("/api/annotations/77"), "annotation updated")
    add, upd = receiver.got("/api/annotations")
    assert add.headers["authorization"] == "Bearer glsa_test"
    body = add.json()
    assert body["time"] == int(d.started_at.timestamp() * 1000)
    assert "alert" in body["tags"]
    assert "site:shendong-3" in body["tags"]
    assert body["dashboardUID"] == "ghgwatch-mine"  # shown on the mine dashboard's panels
    end = upd.json()
    assert upd.method == "PUT"
    assert end["time"] == body["time"]
    assert end["timeEnd"] >= end["time"]


def _dingtalk(receiver: Receiver) -> dict[str, Any]:
    """A DingTalk robot target on the receiver (which answers like DingTalk, errcode 0)."""
    receiver.responder = lambda req: (200, {"errcode": 0, "errmsg": "ok"})
    return {
        "notifiers": [
            {"name": "dt", "type": "dingtalk", "url": receiver.url("/robot/send?access_token=a")}
        ],
        "routes": [{"name": "r", "targets": ["dt"]}],
        "lease_s": 0.5,
    }


async def test_robot_row_claimed_but_never_started_is_sent_once_after_its_lease(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """A sender that died after claiming but before its attempt began: safe to send, once."""
    crashed = await rig_factory(start=False, **_dingtalk(receiver))
    await crashed.store.apply_detections([det()], datetime.now(UTC))
    assert len(await crashed.store.claim_outbox(10, datetime.now(UTC))) == 1
    survivor = await rig_factory(**_dingtalk(receiver))
    survivor.wake.set()
    await wait_until(lambda: _sent_only(survivor.store), "sent after lease expiry")
    assert len(receiver.got("/robot")) == 1


async def test_robot_attempt_started_and_never_finished_is_not_sent_again(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """Outcome unknown (began sending, then died): a DingTalk robot is not paged twice; the
    row is ``unknown``, with the attempt and a ``notification_unknown`` event recorded."""
    crashed = await rig_factory(start=False, **_dingtalk(receiver))
    await crashed.store.apply_detections([det()], datetime.now(UTC))
    (item,) = await crashed.store.claim_outbox(10, datetime.now(UTC))
    assert await crashed.store.outbox.start([item], datetime.now(UTC)) == {item.outbox_id}
    # ... the robot got it here (or not: nobody knows), and the sender died.
    survivor = await rig_factory(**_dingtalk(receiver))
    survivor.wake.set()

    async def unknown() -> bool:
        return await survivor.store.outbox_status_counts() == {"unknown": 1}

    await wait_until(unknown, "the interrupted attempt settled as unknown")
    assert receiver.got("/robot") == []
    assert survivor.dispatcher.stats.unknown == 1
    (alert,) = await survivor.store.list_alerts(AlertFilter())
    detail = await survivor.store.get_alert(alert.alert_id)
    (n,) = detail.notifications
    assert n.status == "unknown"
    assert [a.ok for a in n.history] == [False]
    assert "outcome unknown" in (n.history[0].error or "")
    (event,) = [e for e in detail.events if e.event == "notification_unknown"]
    assert event.detail["target"] == "dt"
    assert event.detail["idempotency_key"] == item.idempotency_key


async def test_webhook_attempt_started_and_never_finished_is_sent_again_with_its_key(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """A webhook de-duplicates on Idempotency-Key: the interrupted attempt is sent again."""
    crashed = await rig_factory(start=False, lease_s=0.5)
    await crashed.store.apply_detections([det()], datetime.now(UTC))
    (item,) = await crashed.store.claim_outbox(10, datetime.now(UTC))
    assert await crashed.store.outbox.start([item], datetime.now(UTC)) == {item.outbox_id}
    survivor = await rig_factory(lease_s=0.5)
    survivor.wake.set()
    await wait_until(lambda: _sent_only(survivor.store), "sent again after lease expiry")
    (req,) = receiver.got("/hook")
    assert req.headers["idempotency-key"] == item.idempotency_key


async def test_lease_is_renewed_while_a_slow_send_runs(
    rig_factory: Callable[..., Any], receiver: Receiver
) -> None:
    """A send slower than the lease keeps its claim: a second dispatcher does not take it."""
    release = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(req: Captured) -> tuple[int, Any]:
        if len(receiver.got("/hook")) == 1:
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(release.wait(), 30), loop).result()
        return 200, {}

    receiver.responder = slow
    first = await rig_factory(lease_s=0.3)
    other = await rig_factory(lease_s=0.3)
    await first.store.apply_detections([det()], datetime.now(UTC))
    first.wake.set()
    other.wake.set()
    await wait_until(lambda: receiver.got("/hook"), "the slow send in flight")
    for _ in range(10):  # ~3 leases long, both dispatchers polling
        await asyncio.sleep(0.1)
        other.wake.set()
    release.set()
    await wait_until(lambda: _sent_only(first.store), "sent")
    assert len(receiver.got("/hook")) == 1
