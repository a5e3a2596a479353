"""Helpers for the ingest tests: publish to real MQTT, read back from real Kafka, run a bridge."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from core.settings import Settings
from ingest import Bridge
from wire import BATCH_MAGIC, ReadingBatch

DEADLINE_S = 30.0
PUBLISH_WINDOW = 500


def bridge_env(
    settings: Settings, mqtt_url: str, *, share_group: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment that makes a ``ghgwatch bridge`` bridge process use these settings.

    Args:
        settings: the test's settings (topic root, client id, Kafka topics).
        mqtt_url: the broker the process connects to.
        share_group: the shared-subscription group; None takes the settings'.
        **extra: more ``GHGWATCH_*`` variables (protocol, log level or format).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(
        {
            "GHGWATCH_MQTT__URL": mqtt_url,
            "GHGWATCH_MQTT__CLIENT_ID": settings.mqtt.client_id,
            "GHGWATCH_MQTT__SHARE_GROUP": (
                settings.mqtt.share_group if share_group is None else share_group
            ),
            "GHGWATCH_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
            "GHGWATCH_KAFKA__BOOTSTRAP": settings.kafka_bootstrap(),
            "GHGWATCH_KAFKA__READINGS_TOPIC": settings.kafka.readings_topic,
            "GHGWATCH_KAFKA__DEADLETTER_TOPIC": settings.kafka.deadletter_topic,
            "GHGWATCH_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
            "GHGWATCH_KAFKA__PARTITIONS": str(settings.kafka.partitions),
            "GHGWATCH_METRICS__ENABLED": "false",
            **extra,
        }
    )
    return env


def mqtt_host_port(settings: Settings) -> tuple[str, int]:
    """Host and port of the settings' MQTT URL."""
    hostport = settings.mqtt_url().split("://", 1)[1]
    host, _, port = hostport.partition(":")
    return host, int(port or 1883)


async def publish_many(
    host: str,
    port: int,
    messages: Iterable[tuple[str, bytes]],
    *,
    client_id: str | None = None,
    pace_every: int = 0,
    pace_s: float = 0.0,
) -> int:
    """Publish QoS 1 messages (at most PUBLISH_WINDOW unacknowledged); returns how many.

    With ``pace_every``, pause ``pace_s`` after each that many messages (a device fleet's
    steady stream rather than one burst).
    """
    sent = 0
    async with aiomqtt.Client(host, port, identifier=client_id, timeout=DEADLINE_S) as client:
        client.pending_calls_threshold = PUBLISH_WINDOW * 2
        window = asyncio.Semaphore(PUBLISH_WINDOW)

        async def one(topic: str, payload: bytes) -> None:
            try:
                await client.publish(topic, payload, qos=1)
            finally:
                window.release()

        tasks = []
        for topic, payload in messages:
            await window.acquire()
            tasks.append(asyncio.create_task(one(topic, payload)))
            sent += 1
            if pace_every and sent % pace_every == 0:
                await asyncio.sleep(pace_s)
        await asyncio.gather(*tasks)
    return sent


@dataclass(frozen=True)
class KafkaRecord:
    """One record read back from Kafka."""

    key: bytes | None
    value: dict[str, Any]


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[KafkaRecord]], bool],
    *,
    deadline_s: float = DEADLINE_S,
) -> list[KafkaRecord]:
    """Read ``topic`` from the beginning until ``until(records)`` holds or the deadline passes."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[KafkaRecord] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        partitions: set[int] = set()
        while loop.time() < end:
            found = consumer.partitions_for_topic(topic) or set()
            if found != partitions:
                partitions = set(found)
                consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
                await consumer.seek_to_beginning()
                records.clear()
            if not partitions:
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
                continue
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                records.extend(KafkaRecord(m.key, _as_json(m.value)) for m in msgs)
            if until(records):
                break
    finally:
        await consumer.stop()
    return records


def _as_json(value: bytes) -> Any:
    """A record value as JSON data; readings batches as the format-1 record they carry."""
    if value.startswith(BATCH_MAGIC):
        return ReadingBatch.decode(value).to_record().model_dump(mode="json")
    return json.loads(value)


def at_least(n: int) -> Callable[[list[KafkaRecord]], bool]:
    """A read_topic condition: n records or more."""
    return lambda records: len(records) >= n


def reading_keys(records: Iterable[KafkaRecord]) -> set[tuple[str, str, str]]:
    """The distinct (device_id, metric, ts) triples in readings records."""
    return {
        (r.value["device_id"], reading["metric"], reading["ts"])
        for r in records
        for reading in r.value["readings"]
    }


def city_readings(root: str, count: int, *, device: str = "pic-01") -> list[tuple[str, bytes]]:
    """``count`` single CO2 readings of one Baotou city analyser, one second apart."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    topic = f"{root}/city/baotou/kundulun/{device}/data"
    return [
        (
            topic,
            json.dumps(
                {"ts": (t0 + timedelta(seconds=i)).isoformat(), "metric": "co2_ppm", "value": 420}
            ).encode(),
        )
        for i in range(count)
    ]


def expected_keys(messages: Iterable[tuple[str, bytes]], root: str) -> set[tuple[str, str, str]]:
    """The (device_id, metric, ts-as-UTC) triples single-reading messages should produce."""
    out = set()
    for topic, payload in messages:
        device_id = "/".join(topic[len(root) + 1 :].split("/")[1:4])
        body = json.loads(payload)
        ts = datetime.fromisoformat(body["ts"]).astimezone(UTC)
        out.add((device_id, body["metric"], ts.isoformat().replace("+00:00", "Z")))
    return out


@asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[Bridge]:
    """Run a bridge in this process until the block exits; re-raise what it raised."""
    bridge = Bridge(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop=stop), name="bridge-under-test")
    try:
        waiter = asyncio.create_task(bridge.wait_connected(DEADLINE_S))
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()
        await waiter
        yield bridge
    finally:
        stop.set()
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
