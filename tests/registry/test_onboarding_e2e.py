"""Onboarding end to end: registry, a real Mosquitto with the generated dynamic-security
configuration, the bridge (registration required), tansu and the storing processor."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import asyncpg
import pytest
from registry_helpers import (
    BRIDGE_USER,
    ROOT,
    Broker,
    device_client,
    device_refused,
    needs_dynsec,
    pipeline,
)

from core.settings import Settings
from processors.storage import migrate
from registry.models import DeviceRecord
from registry.onboard import DynsecApplier, Onboarding

pytestmark = needs_dynsec

DEADLINE_S = 30.0
MINE = DeviceRecord(device_id="ordos-coal/buertai/t4-0101", kind="mine", location_class="T4")
CITY = DeviceRecord(device_id="baotou/kundulun/picarro-01", kind="city")


def _reading(device: DeviceRecord, minutes_ago: int) -> bytes:
    ts = (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)).isoformat()
    if device.kind.value == "mine":
        body: dict[str, Any] = {"ts": ts, "metric": "ch4_pct_vol", "value": 0.2, "location": "T4"}
    else:
        body = {"ts": ts, "metric": "co2_ppm", "value": 421.5}
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def _device(port: int, user: str, password: str) -> AsyncIterator[aiomqtt.Client]:
    async with device_client(port, user, password, DEADLINE_S) as client:
        yield client


async def _refused(port: int, user: str, password: str) -> bool:
    return await device_refused(port, user, password, DEADLINE_S)


async def _stored(conn: asyncpg.Connection, device_id: str, at_least: int) -> int:
    sql = "SELECT count(*) FROM readings WHERE device_id = $1"
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DEADLINE_S):
            while int(await conn.fetchval(sql, device_id)) < at_least:
                await asyncio.sleep(0.1)
    return int(await conn.fetchval(sql, device_id))


async def test_registered_device_stored_and_cut_off_when_disabled_or_rotated(
    dynsec_broker: Callable[..., Awaitable[Broker]],
    settings_factory: Callable[..., Settings],
    pg_url: str,
) -> None:
    broker = await dynsec_broker()
    settings = settings_factory(
        mqtt={
            "url": f"mqtt://127.0.0.1:{broker.port}",
            "username": BRIDGE_USER,
            "password": broker.passwords[BRIDGE_USER],
            "client_id": BRIDGE_USER,
            "topic_root": ROOT,
            "share_group": "",
        },
        ingest={"require_registration": True},
    )
    await migrate(pg_url, settings.db)
    conn = await asyncpg.connect(pg_url)
    try:
        onboarding = Onboarding(conn, DynsecApplier(broker.dynsec))
        mine = await onboarding.add(MINE)
        city = await onboarding.add(CITY)
        stored_hash = await conn.fetchval(
            "SELECT mqtt_password_hash FROM registry_devices WHERE device_id = $1", MINE.device_id
        )
        assert stored_hash.startswith("$7$")
        assert mine.password not in stored_hash
        async with pipeline(settings):
            async with (
                _device(broker.port, mine.username, mine.password) as dev_mine,
                _device(broker.port, city.username, city.password) as dev_city,
            ):
                await dev_mine.publish(MINE.data_topic(ROOT), _reading(MINE, 3), qos=1)
                # forged: the mine sensor's credential on the city station's topic
                with contextlib.suppress(aiomqtt.MqttError):
                    await dev_mine.publish(CITY.data_topic(ROOT), _reading(CITY, 3), qos=1)
                await dev_city.publish(CITY.data_topic(ROOT), _reading(CITY, 2), qos=1)
                assert await _stored(conn, MINE.device_id, 1) == 1
                assert await _stored(conn, CITY.device_id, 1) == 1  # the forged one is not

                await onboarding.set_enabled(MINE.device_id, False)
                with pytest.raises(aiomqtt.MqttError):  # cut off while connected
                    async with asyncio.timeout(DEADLINE_S):
                        await anext(aiter(dev_mine.messages))
                assert await _refused(broker.port, mine.username, mine.password)

                rotated = await onboarding.rotate(CITY.device_id)
                with pytest.raises(aiomqtt.MqttError):  # the old password's session too
                    async with asyncio.timeout(DEADLINE_S):
                        await anext(aiter(dev_city.messages))
            assert await _refused(broker.port, city.username, city.password)
            async with _device(broker.port, rotated.username, rotated.password) as dev_city:
                await dev_city.publish(CITY.data_topic(ROOT), _reading(CITY, 1), qos=1)
            assert await _stored(conn, CITY.device_id, 2) == 2
        assert await conn.fetchval("SELECT count(*) FROM readings") == 3
    finally:
        await conn.close()
