"""The embedded stand-ins start real services on free ports and stop them cleanly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomqtt
from aiokafka.admin import AIOKafkaAdminClient

from ghgwatch.embedded import ManagedProcess, free_port, port_is_free, start_tansu


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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", taken))
        s.listen()
        assert free_port(taken) != taken
