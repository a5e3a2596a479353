"""The embedded stand-ins start real services on free ports and stop them cleanly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adapters.ports import free_port, port_is_free
from ghgwatch.embedded import ManagedProcess, start_amqtt, start_postgres, start_tansu


async def test_tansu_answers_kafka_metadata_and_stops(tmp_path: Path) -> None:
    """An embedded tansu takes a free port, serves Kafka metadata, and frees the port on stop."""
    proc = await start_tansu(tmp_path, port=0)
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{proc.port}")
    await admin.start()
    try:
        assert isinstance(await admin.list_topics(), list)
    finally:
        await admin.close()
        await proc.stop()
    assert port_is_free(proc.port)


async def test_private_mosquitto_round_trips_a_message(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
) -> None:
    """A private Mosquitto from a generated config carries a QoS 1 message."""
    broker = await own_mosquitto()
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe("x/y", qos=1)
        await client.publish("x/y", b"hello", qos=1)
        async for msg in client.messages:
            assert msg.payload == b"hello"
            break


def test_free_port_prefers_the_standard_port_only_when_free() -> None:
    """A taken preferred port is replaced by another free one."""
    taken = free_port(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        assert free_port(taken) != taken


async def test_embedded_postgres_takes_a_free_port_keeps_data_and_stops(tmp_path: Path) -> None:
    """With its preferred port taken, embedded PostgreSQL starts on another one, serves
    asyncpg, keeps its data across a restart and frees its port when stopped."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        pg = await start_postgres(tmp_path / "pg", port=busy)
    try:
        assert pg.port != busy
        assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/ghgwatch"
        conn = await asyncpg.connect(pg.url)
        try:
            await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        finally:
            await conn.close()
    finally:
        await pg.stop()
    assert pg.proc is not None
    assert pg.proc.returncode is not None
    assert port_is_free(pg.port)

    again = await start_postgres(tmp_path / "pg", port=0)
    try:
        conn = await asyncpg.connect(again.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 42
        finally:
            await conn.close()
    finally:
        await again.stop()
    assert port_is_free(again.port)


async def test_embedded_postgres_without_a_preferred_port_avoids_a_taken_5432(
    tmp_path: Path,
) -> None:
    """The default port is 5432 only when free; on this machine's busy 5432 it picks another."""
    if port_is_free(5432):
        pytest.skip("5432 is free here: nothing to avoid")
    pg = await start_postgres(tmp_path / "pg")
    try:
        assert pg.port != 5432
    finally:
        await pg.stop()


async def test_amqtt_fallback_serves_mqtt_311_and_refuses_mqtt_5(tmp_path: Path) -> None:
    """The pure-Python stand-in carries MQTT 3.1.1 messages but refuses MQTT v5 clients,
    which is why `up` warns that the bridge cannot use it."""
    broker = await start_amqtt(tmp_path, port=0)
    try:
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="v311", protocol=aiomqtt.ProtocolVersion.V311
        ) as client:
            await client.subscribe("x/y", qos=1)
            await client.publish("x/y", b"hello", qos=1)
            async with asyncio.timeout(10):
                async for msg in client.messages:
                    assert msg.payload == b"hello"
                    break
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="v5", protocol=aiomqtt.ProtocolVersion.V5
            ):
                pass
    finally:
        await broker.stop()
    assert port_is_free(broker.port)


async def test_embedded_postgres_left_running_by_a_killed_run_is_stopped_and_replaced(
    tmp_path: Path,
) -> None:
    """A server an earlier run left behind (its owner killed) is stopped, and the new one
    starts on the same data, so a crashed `up` never blocks the next."""
    first = await start_postgres(tmp_path / "pg", port=0)
    assert first.proc is not None
    conn = await asyncpg.connect(first.url)
    try:
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
    finally:
        await conn.close()
    # The "killed" owner never calls stop(); the server keeps running.
    second = await start_postgres(tmp_path / "pg", port=0)
    try:
        assert await asyncio.to_thread(first.proc.wait, 10) is not None
        conn = await asyncpg.connect(second.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == 7
        finally:
            await conn.close()
    finally:
        await second.stop()
        await first.stop()
