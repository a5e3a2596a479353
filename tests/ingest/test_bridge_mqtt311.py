"""The bridge speaking MQTT 3.1.1 (protocol "3.1.1", plain subscription) on the amqtt broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from ingest_helpers import DEADLINE_S, at_least, read_topic, reading_keys, running_bridge

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, start_amqtt


@pytest.fixture
async def amqtt_broker(tmp_path: Path) -> AsyncIterator[ManagedProcess]:
    """A private amqtt broker (pure Python, MQTT 3.1.1 only) on a free port."""
    broker = await start_amqtt(tmp_path / "amqtt", port=0)
    try:
        yield broker
    finally:
        await broker.stop()


def _v311(settings: Settings, broker: ManagedProcess) -> Settings:
    mqtt = settings.mqtt.model_copy(
        update={"url": broker.url, "protocol": "3.1.1", "share_group": ""}
    )
    return settings.model_copy(update={"mqtt": mqtt})


async def test_bridge_on_amqtt_produces_valid_readings_and_dead_letters_a_malformed_one(
    amqtt_broker: ManagedProcess, settings: Settings, kafka_bootstrap: str
) -> None:
    """With protocol 3.1.1 on amqtt, valid readings reach the readings topic, a malformed one
    goes to the dead-letter topic and the device hears the reason on its status topic."""
    cfg = _v311(settings, amqtt_broker)
    root = cfg.mqtt.topic_root
    device = f"{root}/city/baotou/kundulun/pic-07"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    valid = [
        json.dumps(
            {"ts": (t0 + timedelta(seconds=i)).isoformat(), "metric": "co2_ppm", "value": 420 + i}
        ).encode()
        for i in range(20)
    ]
    heard: list[dict[str, str]] = []
    async with running_bridge(cfg) as bridge:
        async with aiomqtt.Client("127.0.0.1", amqtt_broker.port, identifier="dev-07") as dev:
            await dev.subscribe(f"{device}/status", qos=1)
            for payload in valid:
                await dev.publish(f"{device}/data", payload, qos=1)
            await dev.publish(f"{device}/data", b"{not json", qos=1)
            async with asyncio.timeout(DEADLINE_S):
                async for msg in dev.messages:
                    assert isinstance(msg.payload, bytes)
                    heard.append(json.loads(msg.payload))
                    break
        readings = await read_topic(kafka_bootstrap, cfg.kafka.readings_topic, at_least(len(valid)))
        dead = await read_topic(kafka_bootstrap, cfg.kafka.deadletter_topic, at_least(1))
        async with asyncio.timeout(DEADLINE_S):
            while bridge.stats().acked < len(valid) + 1:
                await asyncio.sleep(0.05)
    assert len(reading_keys(readings)) == len(valid)
    assert {r.key for r in readings} == {b"baotou/kundulun/pic-07"}
    assert [r.value["reason"] for r in dead] == ["malformed_json"]
    assert dead[0].value["mqtt_topic"] == f"{device}/data"
    assert heard == [heard[0]]
    assert heard[0]["status"] == "rejected"
    assert heard[0]["reason"] == "malformed_json"
    stats = bridge.stats()
    assert stats.produced == {"readings": len(valid), "deadletter": 1}
    assert stats.in_flight == 0
