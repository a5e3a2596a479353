"""End to end on real Mosquitto, tansu and PostgreSQL: MQTT, bridge, Kafka, processor, DB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import aiomqtt
import asyncpg
from service_helpers import running

from core.settings import Settings
from ingest import Bridge
from processors import Processor
from processors.storage import migrate

DEADLINE_S = 60.0


@asynccontextmanager
async def running_pipeline(settings: Settings) -> AsyncIterator[None]:
    """Migrate, then run a bridge and a processor until the block exits."""
    await migrate(settings.db_url(), settings.db)
    bridge = Bridge(settings)
    runners = [
        lambda stop: bridge.run(stop=stop),
        lambda stop: Processor(settings).run(stop=stop),
    ]
    async with running(bridge, runners, connect_timeout_s=DEADLINE_S, stop_timeout_s=30):
        yield


async def wait_for_count(db_url: str, sql: str, expected: int) -> int:
    """Poll ``sql`` (returning one number) until it reaches ``expected`` or the deadline."""
    conn = await asyncpg.connect(db_url)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                got = int(await conn.fetchval(sql))
                if got >= expected:
                    return got
                await asyncio.sleep(0.2)
    except TimeoutError:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def _mqtt_host_port(settings: Settings) -> tuple[str, int]:
    hostport = settings.mqtt_url().split("://", 1)[1]
    host, _, port = hostport.partition(":")
    return host, int(port or 1883)


async def test_all_kinds_stored_once_and_malformed_dead_lettered_with_device_told(
    settings: Settings,
) -> None:
    """Valid readings of every kind are stored exactly once; each malformed one is
    dead-lettered with its reason and the device hears the reason on its status topic."""
    root = settings.mqtt.topic_root
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    valid: list[tuple[str, bytes]] = []
    expected_rows = 0
    for i in range(20):
        ts = (t0 + timedelta(seconds=i)).isoformat()
        valid.append(
            (
                f"{root}/city/baotou/kundulun/pic-01/data",
                json.dumps({"ts": ts, "metric": "co2_ppm", "value": 420 + i}).encode(),
            )
        )
        valid.append(
            (
                f"{root}/cems/beifang/dalate/unit-3/data",
                json.dumps(
                    {
                        "ts": ts,
                        "readings": [
                            {"metric": "co2_pct_vol", "value": 12.1},
                            {"metric": "flow_m3_h", "value": 1.6e6},
                            {"metric": "load_mw", "value": 540.0},
                        ],
                    }
                ).encode(),
            )
        )
        valid.append(
            (
                f"{root}/mine/ordos-coal/buertai/t1-0302/data",
                json.dumps(
                    {"ts": ts, "metric": "ch4_pct_vol", "value": 0.31, "location": "T1"}
                ).encode(),
            )
        )
        valid.append(
            (
                f"{root}/leak/changqing/sulige-cs7/ch4-04/data",
                json.dumps({"ts": ts, "metric": "ch4_ppm", "value": 2.1, "flag": "C"}).encode(),
            )
        )
        expected_rows += 6
    bad_device = f"{root}/city/ordos/kangbashi/pic-09"
    malformed = [
        (f"{bad_device}/data", b"{not json", "malformed_json"),
        (
            f"{bad_device}/data",
            json.dumps({"ts": t0.isoformat(), "metric": "co2_pct_vol", "value": 4}).encode(),
            "metric_not_for_kind",
        ),
        (
            f"{bad_device}/data",
            json.dumps({"ts": "2026-01-01T00:00:00", "metric": "co2_ppm", "value": 4}).encode(),
            "schema",
        ),
    ]
    host, port = _mqtt_host_port(settings)
    async with running_pipeline(settings):
        async with aiomqtt.Client(host, port, identifier=f"dev-{settings.mqtt.client_id}") as dev:
            await dev.subscribe(f"{bad_device}/status", qos=1)
            # Publish twice: the second copy of every valid reading must be absorbed.
            for _ in range(2):
                for topic, payload in valid:
                    await dev.publish(topic, payload, qos=1)
            for topic, payload, _reason in malformed:
                await dev.publish(topic, payload, qos=1)
            # Subscribed before publishing, so every rejection is heard live, in order.
            heard: list[str] = []
            async with asyncio.timeout(DEADLINE_S):
                async for msg in dev.messages:
                    assert isinstance(msg.payload, bytes)
                    heard.append(json.loads(msg.payload)["reason"])
                    if len(heard) == len(malformed):
                        break
        stored = await wait_for_count(
            settings.db_url(), "select count(*) from readings", expected_rows
        )
        dead = await wait_for_count(
            settings.db_url(), "select count(*) from dead_letters", len(malformed)
        )

    assert stored == expected_rows
    assert dead == len(malformed)
    conn = await asyncpg.connect(settings.db_url())
    try:
        reasons = {r["reason"] for r in await conn.fetch("select reason from dead_letters")}
        kinds = {
            r["kind"]: r["readings_count"]
            for r in await conn.fetch(
                "select kind, sum(readings_count) as readings_count from devices group by kind"
            )
        }
        flag = await conn.fetchval(
            "select distinct flag from readings where device_id = 'changqing/sulige-cs7/ch4-04'"
        )
        payloads = {
            bytes(r["payload"]) for r in await conn.fetch("select payload from dead_letters")
        }
    finally:
        await conn.close()
    assert reasons == {reason for _t, _p, reason in malformed}
    assert kinds == {"city": 20, "cems": 60, "mine": 20, "leak": 20}
    assert flag == "C"
    assert payloads == {p for _t, p, _r in malformed}
    assert heard == [reason for _t, _p, reason in malformed]
