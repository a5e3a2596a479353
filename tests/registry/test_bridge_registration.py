"""ingest.require_registration: the bridge admits only registered, enabled devices.

Runs on the machine's Mosquitto (anonymous publishing allowed, so the bridge itself must
refuse), tansu and PostgreSQL, with the storing processor writing readings and dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiomqtt
import asyncpg
import pytest
from registry_helpers import pipeline

from core.errors import FatalError
from core.settings import Settings
from processors.storage import migrate
from registry.models import DeviceRecord
from registry.onboard import NoBroker, Onboarding
from registry.view import RegistryView

DEADLINE_S = 30.0


def _payload(minutes_ago: int) -> bytes:
    ts = (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)).isoformat()
    return json.dumps({"ts": ts, "metric": "co2_ppm", "value": 420.0 + minutes_ago}).encode()


async def _poll(conn: asyncpg.Connection, sql: str, *args: object, want: int) -> int:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DEADLINE_S):
            while int(await conn.fetchval(sql, *args)) < want:
                await asyncio.sleep(0.1)
    return int(await conn.fetchval(sql, *args))


async def _reloaded(view: RegistryView, loads: int) -> None:
    """Wait for the view's reload after a change (NOTIFY; the periodic one is 60 s away)."""
    async with asyncio.timeout(DEADLINE_S / 2):
        while view.loads == loads:
            await asyncio.sleep(0.02)


async def test_unregistered_and_disabled_devices_are_dead_lettered(
    settings_factory: Callable[..., Settings], pg_url: str
) -> None:
    settings = settings_factory(ingest={"require_registration": True, "registry_refresh_s": 60})
    root = settings.mqtt.topic_root
    await migrate(pg_url, settings.db)
    conn = await asyncpg.connect(pg_url)
    try:
        onboarding = Onboarding(conn, NoBroker())
        await onboarding.add(DeviceRecord(device_id="baotou/kundulun/pic-01", kind="city"))
        await onboarding.add(DeviceRecord(device_id="baotou/kundulun/pic-02", kind="city"))
        host, port = settings.mqtt_url().split("://")[1].split(":")
        async with (
            pipeline(settings) as bridge,
            aiomqtt.Client(host, int(port), identifier=f"dev-{root}") as dev,
        ):
            for device, minutes in (("pic-01", 5), ("pic-02", 5), ("stranger", 5)):
                topic = f"{root}/city/baotou/kundulun/{device}/data"
                await dev.publish(topic, _payload(minutes), qos=1)
            # registered as city, publishing as a CEMS unit: not this device
            cems = json.dumps({"ts": datetime.now(UTC).isoformat(), "metric": "co2_pct_vol",
                               "value": 11.5}).encode()  # fmt: skip
            await dev.publish(f"{root}/cems/baotou/kundulun/pic-02/data", cems, qos=1)
            dead = "SELECT count(*) FROM dead_letters WHERE reason = 'unregistered'"
            assert await _poll(conn, dead, want=2) == 2
            readings = "SELECT count(*) FROM readings"
            assert await _poll(conn, readings, want=2) == 2
            rows = await conn.fetch("SELECT device_id, detail FROM dead_letters ORDER BY id")
            assert {r["device_id"] for r in rows} == {"baotou/kundulun/stranger",
                                                      "baotou/kundulun/pic-02"}  # fmt: skip
            assert any("not registered" in r["detail"] for r in rows)
            assert any("registered as city" in r["detail"] for r in rows)

            # disabled: refused from the next message on (NOTIFY, not the 60 s refresh)
            view = bridge._registry
            assert view is not None
            loads = view.loads
            await onboarding.set_enabled("baotou/kundulun/pic-01", False)
            await _reloaded(view, loads)
            await dev.publish(f"{root}/city/baotou/kundulun/pic-01/data", _payload(3), qos=1)
            assert await _poll(conn, dead, want=3) == 3
            loads = view.loads
            await onboarding.set_enabled("baotou/kundulun/pic-01", True)
            await _reloaded(view, loads)
            await dev.publish(f"{root}/city/baotou/kundulun/pic-01/data", _payload(2), qos=1)
            assert await _poll(conn, readings, want=3) == 3
        assert await conn.fetchval(dead) == 3
    finally:
        await conn.close()


async def test_view_keeps_last_state_while_db_is_unreachable(pg_url: str) -> None:
    """Before a first load it refuses to guess; after it, it keeps what it had."""
    view = RegistryView("postgresql://postgres@127.0.0.1:1/none", refresh_s=0.2)
    with pytest.raises(FatalError, match="registry not readable"):
        await view.start(timeout_s=1.0)

    # a database without the registry table: no point waiting, the reason is said at once
    # (well before the 300 s timeout given here)
    with pytest.raises(FatalError, match="registry_devices"):
        await RegistryView(pg_url, refresh_s=0.2).start(timeout_s=300.0)

    await migrate(pg_url, Settings().db)
    conn = await asyncpg.connect(pg_url)
    try:
        await Onboarding(conn, NoBroker()).add(DeviceRecord(device_id="a/b/c", kind="leak"))
        view = RegistryView(pg_url, refresh_s=0.2)
        await view.start(timeout_s=10.0)
        assert view.admits("a/b/c", "leak")
        assert not view.admits("a/b/c", "city")
        assert not view.admits("a/b/x", "leak")
        # the database refuses new connections and the view's own one is cut
        base, _, name = pg_url.rpartition("/")
        admin = await asyncpg.connect(f"{base}/postgres")
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                name,
            )
            async with asyncio.timeout(DEADLINE_S):
                while view.stale_since is None:
                    await asyncio.sleep(0.1)
            assert view.admits("a/b/c", "leak")  # the last view, not "nobody"
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
        async with asyncio.timeout(DEADLINE_S):
            while view.stale_since is not None:
                await asyncio.sleep(0.1)
        await view.close()
    finally:
        await conn.close()  # cut by the terminate above; closing it is all that is left
