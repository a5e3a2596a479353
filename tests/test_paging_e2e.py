"""Paging end to end on the real services: readings published over MQTT (Mosquitto) pass the
real bridge, Kafka (tansu), the storing processor, the detector and the alert service
(PostgreSQL) and reach on-call staff at a real HTTP receiver, or do not.

The route is the production one: on-call staff hear warning and critical alerts (the
default ``AlertRoute.severities``), so a maintenance ticket pages nobody. An unacknowledged
critical alert is re-notified and escalated until someone acknowledges it through the on-call
API. (``no_data`` end to end: tests/processors/test_liveness.py.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import asyncpg
import httpx
import numpy as np
from service_helpers import running

from adapters.ports import free_port
from alerts import AlertService
from alerts.api import AlertApi
from core.settings import Settings
from ingest import Bridge
from processors import Processor
from processors.detector import DetectorService
from processors.storage import migrate
from tests.alerts.conftest import Receiver, receiver, wait_until

__all__ = ["receiver"]  # the fixture, imported for this module's tests

DEADLINE_S = 90.0
STOP_TIMEOUT_S = 30.0
SITE = ("ordos-coal", "buertai")
# T1 (working face): alarm at 1.0 % vol, power cut at 1.5 % vol (Coal Mine Safety Regs 2022).
T1_ALARM_PCT = 1.0
BASELINE_PCT = 0.30
NOISE_PCT = 0.005


def _paging_settings(
    settings_factory: Callable[..., Settings],
    test_id: str,
    receiver: Receiver,
    **alerts: Any,
) -> Settings:
    """Settings of the whole pipeline for this test; on-call staff are one webhook."""
    return settings_factory(
        kafka={"detections_topic": f"det-{test_id}"},
        detection={"group_id": f"det-{test_id}", "commit_interval_s": 0.2},
        alerts={
            "group_id": f"alerts-{test_id}",
            "dispatch_poll_s": 0.2,
            "tick_s": 0.1,
            "notifiers": [
                {
                    "name": "oncall",
                    "type": "webhook",
                    "url": receiver.url("/hook"),
                    "language": "en",
                }
            ],
            # The default severities: warning and critical page, maintenance does not.
            "routes": [{"name": "oncall", "targets": ["oncall"]}],
            **alerts,
        },
    )


@asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[None]:
    """Migrate, then run the bridge, processor, detector and alert service until the exit."""
    await migrate(settings.db_url(), settings.db)
    bridge = Bridge(settings)
    runners = [
        lambda stop: Processor(settings).run(stop=stop),
        lambda stop: AlertService(settings).run(stop=stop),
        lambda stop: DetectorService(settings).run(stop=stop),
        lambda stop: bridge.run(stop=stop),
    ]
    async with running(
        bridge, runners, connect_timeout_s=DEADLINE_S, stop_timeout_s=STOP_TIMEOUT_S
    ):
        yield


def _release(t0: datetime, step_s: float, seed: int) -> list[tuple[datetime, float]]:
    """A healthy T1 sensor for five minutes, then a gas release above the alarm level that
    stays (below the 1.5 % power cut)."""
    readings = _quiet(np.random.default_rng(seed), t0, 30, step_s)
    start = t0 + timedelta(seconds=step_s * len(readings))
    rise = [0.5, 0.8, 1.05, 1.2] + [1.3] * 12
    return readings + [(start + timedelta(seconds=step_s * i), v) for i, v in enumerate(rise)]


async def _publish(settings: Settings, device: str, readings: list[tuple[datetime, float]]) -> None:
    """Publish a mine methane sensor's readings over MQTT, one message each, in order."""
    network, site = SITE
    topic = f"{settings.mqtt.topic_root}/mine/{network}/{site}/{device}/data"
    hostport = settings.mqtt_url().split("://", 1)[1]
    host, _, port = hostport.partition(":")
    async with aiomqtt.Client(host, int(port or 1883), identifier=f"{device}-{id(readings)}") as c:
        for ts, value in readings:
            body = {"ts": ts.isoformat(), "metric": "ch4_pct_vol", "value": value, "location": "T1"}
            await c.publish(topic, json.dumps(body).encode(), qos=1)


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _quiet(
    rng: np.random.Generator, start: datetime, n: int, step_s: float
) -> list[tuple[datetime, float]]:
    """``n`` readings of a healthy T1 sensor, ``step_s`` apart from ``start``."""
    values = BASELINE_PCT + NOISE_PCT * rng.standard_normal(n)
    return [
        (start + timedelta(seconds=step_s * i), round(float(v), 3)) for i, v in enumerate(values)
    ]


async def test_mine_gas_release_over_mqtt_pages_once_critical_naming_site_device_reading(
    settings_factory: Callable[..., Settings], test_id: str, receiver: Receiver
) -> None:
    """A T1 methane sensor's readings rise past the alarm level (a gas release) and stay
    there: the HTTP receiver gets exactly one notification, a critical new alert naming the
    site, the device, the crossing reading and the alarm level."""
    settings = _paging_settings(settings_factory, test_id, receiver)
    device = "t1-0302"
    device_id = f"{SITE[0]}/{SITE[1]}/{device}"
    step_s = 10.0
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    readings = _quiet(np.random.default_rng(7), t0, 30, step_s)
    rise = [0.5, 0.8, 1.05, 1.2] + [1.3] * 12  # stays below the 1.5 % power-cut level
    crossing = next(v for v in rise if v >= T1_ALARM_PCT)
    start = t0 + timedelta(seconds=step_s * len(readings))
    readings += [(start + timedelta(seconds=step_s * i), v) for i, v in enumerate(rise)]

    async with running_services(settings):
        await _publish(settings, device, readings)
        await wait_until(lambda: receiver.got("/hook"), "a notification", DEADLINE_S)

        async def settled() -> bool:
            """The alarm's detection joined its alert and nothing is left to send."""
            joined = await _fetch(
                settings.db_url(),
                "SELECT count(*) AS n FROM alert_detections WHERE detector = 'threshold_alarm'",
            )
            waiting = await _fetch(
                settings.db_url(),
                "SELECT count(*) AS n FROM alert_outbox WHERE status IN ('pending', 'sending')",
            )
            return bool(joined[0]["n"] >= 1 and waiting[0]["n"] == 0)

        await wait_until(settled, "the alarm joined to its alert, outbox empty", DEADLINE_S)
        alerts = await _fetch(settings.db_url(), "SELECT * FROM alerts")

    sent = receiver.got("/hook")
    assert len(sent) == 1, [r.json()["title"] for r in sent]
    body = sent[0].json()
    assert body["event"] == "opened"
    alert = body["alert"]
    assert alert["severity"] == "critical"
    assert alert["detector"] == "threshold_alarm"
    assert (alert["network"], alert["site"], alert["device_id"]) == (*SITE, device_id)
    assert alert["value"] == crossing
    assert alert["threshold"] == T1_ALARM_PCT
    text = body["text"]
    assert f"{SITE[0]}/{SITE[1]}" in text
    assert device_id in text
    assert f"{crossing:.4g} % vol (threshold {T1_ALARM_PCT:.4g} % vol)" in text
    assert "CRITICAL" in body["title"]
    assert [(a["severity"], a["device_id"]) for a in alerts] == [("critical", device_id)]


async def test_sensor_spike_over_mqtt_opens_a_maintenance_ticket_and_pages_nobody(
    settings_factory: Callable[..., Settings], test_id: str, receiver: Receiver
) -> None:
    """Two hours of a healthy T1 sensor (past the detectors' warm-up) with one sample far
    out that returns at once, below any alarm level: a maintenance ticket for the device
    (detector spike), no notification queued and none received."""
    settings = _paging_settings(settings_factory, test_id, receiver)
    device = "t1-0417"
    device_id = f"{SITE[0]}/{SITE[1]}/{device}"
    step_s = 30.0
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2, minutes=10)
    readings = _quiet(np.random.default_rng(11), t0, 250, step_s)
    spike_at = 220  # 110 minutes in: past warmup_s (an hour) and warmup_samples
    ts, _ = readings[spike_at]
    readings[spike_at] = (ts, 0.70)  # far out of the noise, still below the 1.0 % alarm

    async with running_services(settings):
        await _publish(settings, device, readings)

        async def ticket() -> list[asyncpg.Record]:
            return await _fetch(
                settings.db_url(),
                "SELECT a.alert_id, a.severity, a.device_id FROM alerts a"
                " JOIN alert_detections ad USING (alert_id) WHERE ad.detector = 'spike'",
            )

        rows = await wait_until(ticket, "a spike ticket", DEADLINE_S)
        # The outbox row of a page is written in the alert's own transaction: none now
        # means none ever for this alert.
        queued = await _fetch(
            settings.db_url(),
            "SELECT count(*) AS n FROM alert_outbox WHERE alert_id = $1",
            rows[0]["alert_id"],
        )
        alerts = await _fetch(settings.db_url(), "SELECT severity FROM alerts")

    assert [(r["severity"], r["device_id"]) for r in rows] == [("maintenance", device_id)]
    assert queued[0]["n"] == 0
    assert {a["severity"] for a in alerts} == {"maintenance"}
    assert receiver.got("/") == []


ESCALATE_AFTER_S = 2.0
TOKEN = "e2e-token-li-na"


async def test_unacknowledged_release_is_escalated_until_acknowledged_over_the_api(
    settings_factory: Callable[..., Settings], test_id: str, receiver: Receiver
) -> None:
    """A gas release nobody acknowledges: on-call staff are re-notified and the duty manager
    is brought in (one step every ``escalate_after_s``, at most ``max_escalations``); once
    on-call staff acknowledge it through the on-call API, nobody hears of it again."""
    settings = _paging_settings(
        settings_factory,
        test_id,
        receiver,
        notifiers=[
            {"name": "oncall", "type": "webhook", "url": receiver.url("/hook"), "language": "en"},
            {
                "name": "manager",
                "type": "webhook",
                "url": receiver.url("/manager"),
                "language": "en",
            },
        ],
        routes=[{"name": "oncall", "targets": ["oncall"], "escalation": ["manager"]}],
        escalate_after_s={"critical": ESCALATE_AFTER_S},
        max_escalations=5,
        api_tokens={"li.na": TOKEN},
    )
    device = "t1-0555"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    api = AlertApi(settings, port=free_port())
    api_stop = asyncio.Event()
    api_task = asyncio.create_task(api.run(stop=api_stop))

    def events(path: str) -> list[tuple[str, int]]:
        return [(r.json()["event"], r.json()["alert"]["level"]) for r in receiver.got(path)]

    try:
        async with running_services(settings):
            async with asyncio.timeout(20):
                await api.started.wait()
            await _publish(settings, device, _release(t0, 10.0, seed=5))
            await wait_until(lambda: receiver.got("/manager"), "the duty manager paged", DEADLINE_S)
            await wait_until(
                lambda: len(receiver.got("/hook")) >= 3, "on-call re-notified twice", DEADLINE_S
            )
            async with httpx.AsyncClient(
                base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as client:
                (alert,) = (await client.get("/alerts")).json()
                resp = await client.post(f"/alerts/{alert['alert_id']}/ack", json={"note": "here"})
            assert resp.status_code == 200, resp.text
            assert resp.json()["acknowledged_by"] == "li.na"
            # what was already queued when the ack landed may still go out; then nothing more
            await asyncio.sleep(1.0)
            heard = len(receiver.got("/"))
            await asyncio.sleep(3 * ESCALATE_AFTER_S)
            after = len(receiver.got("/"))
            history = await _fetch(
                settings.db_url(),
                "SELECT event FROM alert_events WHERE alert_id = $1 ORDER BY at, event_id",
                alert["alert_id"],
            )
    finally:
        api_stop.set()
        async with asyncio.timeout(20):
            await api_task

    oncall, manager = events("/hook"), events("/manager")
    assert oncall[0] == ("opened", 0)
    # each escalation step re-notifies on-call staff and, from the first, the manager
    assert [e for e, _ in oncall[1:]] == ["escalated"] * (len(oncall) - 1)
    assert [lvl for _, lvl in oncall[1:]] == list(range(1, len(oncall)))
    assert [e for e, _ in manager] == ["escalated"] * len(manager)
    assert len(manager) == len(oncall) - 1
    assert after == heard, "notified again after the acknowledgement"
    kinds = [r["event"] for r in history]
    assert "acknowledged" in kinds
    assert kinds.index("acknowledged") > kinds.index("escalated")
