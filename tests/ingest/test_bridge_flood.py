"""A flood of rejected messages never stalls the bridge, and off-scheme topics are not lost.

Issue 9 finding 2: each rejected message held its in-flight slot until the bridge's status
publish to the device was acknowledged; with the buffer at ``receive_maximum`` the socket was
no longer read, so neither those acknowledgements nor keepalives arrived, the broker dropped
the bridge, and the cycle repeated with the same messages dead-lettered over and over.
Finding 4 (part): topics outside the data scheme were acknowledged by the broker and vanished.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from ingest_helpers import (
    DEADLINE_S,
    KafkaRecord,
    at_least,
    city_readings,
    expected_keys,
    publish_many,
    read_topic,
    reading_keys,
    running_bridge,
)

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess

FLOOD_DEVICES = 100
FLOOD_PER_DEVICE = 10
VALID_READINGS = 200
# Small on purpose: the flood is many times the window, as in the issue (5,000 vs 2,000).
RECEIVE_MAXIMUM = 20
# The shortest keepalive the settings allow: a bridge that stops reading its socket is
# dropped by the broker after 1.5 x this, well inside the test's deadline.
KEEPALIVE_S = 5
FLOOD_DEADLINE_S = 90.0


def _schema_invalid(root: str) -> list[tuple[str, bytes]]:
    """FLOOD_DEVICES x FLOOD_PER_DEVICE distinct messages the schema rejects (unknown key)."""
    ts = (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)).isoformat()
    return [
        (
            f"{root}/city/baotou/flood/dev-{d:03d}/data",
            json.dumps({"ts": ts, "metric": "co2_ppm", "value": 420, "junk": i}).encode(),
        )
        for i in range(FLOOD_PER_DEVICE)
        for d in range(FLOOD_DEVICES)
    ]


def _dead_letter_counts(records: list[KafkaRecord]) -> Counter[tuple[str, bytes]]:
    return Counter(
        (r.value["mqtt_topic"], base64.b64decode(r.value["payload_b64"])) for r in records
    )


async def _until(condition: Callable[[], bool], what: str, deadline_s: float) -> None:
    try:
        async with asyncio.timeout(deadline_s):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
async def test_a_reject_flood_neither_stalls_the_bridge_nor_repeats_its_dead_letters(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
    fast_settings: Callable[..., Settings],
    kafka_bootstrap: str,
) -> None:
    """1,000 schema-invalid messages from 100 devices (50x ReceiveMaximum), then 200 valid
    readings: every valid reading reaches Kafka, every reject is dead-lettered exactly once
    (no reconnect cycle replays them), and the bridge stays on its first connection."""
    broker = await own_mosquitto(persistence=False)
    settings = fast_settings(
        mqtt={
            "url": broker.url,
            "receive_maximum": RECEIVE_MAXIMUM,
            "keepalive_s": KEEPALIVE_S,
            "share_group": "",
        }
    )
    root = settings.mqtt.topic_root
    flood = _schema_invalid(root)
    valid = city_readings(root, VALID_READINGS, device="after-flood")
    async with running_bridge(settings) as bridge:
        await publish_many("127.0.0.1", broker.port, flood)
        await publish_many("127.0.0.1", broker.port, valid)
        readings = await read_topic(
            kafka_bootstrap,
            settings.kafka.readings_topic,
            lambda records: reading_keys(records) >= expected_keys(valid, root),
            deadline_s=FLOOD_DEADLINE_S,
        )
        await _until(
            lambda: bridge.stats().acked >= len(flood) + len(valid),
            "every message to be acknowledged",
            FLOOD_DEADLINE_S,
        )
        dead = await read_topic(
            kafka_bootstrap, settings.kafka.deadletter_topic, at_least(len(flood))
        )
        stats = bridge.stats()
    assert reading_keys(readings) == expected_keys(valid, root)
    counts = _dead_letter_counts(dead)
    assert set(counts) == set(flood)
    assert max(counts.values()) == 1, "a reject was dead-lettered more than once"
    assert {r.value["reason"] for r in dead} == {"schema"}
    assert stats.rejected_total == len(flood)
    assert bridge.metrics.mqtt_connects == 1, "the bridge lost its connection during the flood"


async def test_off_scheme_topics_are_dead_lettered_as_bad_topic_exactly_once(
    fast_settings: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    """Messages on topics under the root that do not follow the data scheme (a wrong channel,
    an unknown kind, too few or too many segments, upper case) are dead-lettered with reason
    ``bad_topic`` instead of vanishing; the bridge's own status replies are not taken as
    input."""
    settings = fast_settings(mqtt={"share_group": ""})
    root = settings.mqtt.topic_root
    body = json.dumps({"ts": "2026-11-25T08:00:05Z", "metric": "co2_ppm", "value": 420})
    off_scheme = [
        f"{root}/city/baotou/kundulun/pic-01/telemetry",
        f"{root}/weather/baotou/kundulun/pic-01/data",
        f"{root}/city/baotou/pic-01/data",
        f"{root}/city/baotou/kundulun/pic-01/data/extra",
        f"{root}/city/Baotou/kundulun/pic-01/data",
        f"{root}/data",
    ]
    messages = [(topic, f'{body[:-1]}, "n": {i}}}'.encode()) for i, topic in enumerate(off_scheme)]
    # One rejected message on the scheme, so the bridge also publishes a status reply.
    schema_bad = (f"{root}/city/baotou/kundulun/pic-02/data", b'{"ts": 1}')
    host, port = settings.mqtt_url().split("://", 1)[1].split(":")
    async with running_bridge(settings) as bridge:
        await publish_many(host, int(port), [*messages, schema_bad])
        dead = await read_topic(
            kafka_bootstrap, settings.kafka.deadletter_topic, at_least(len(messages) + 1)
        )
        await _until(
            lambda: bridge.stats().acked >= len(messages) + 1, "every message acked", DEADLINE_S
        )
        await _until(lambda: bridge.stats().status_published >= 1, "the status reply", DEADLINE_S)
        # Anything the bridge wrongly took as input (its own status reply) would show here.
        late = await read_topic(
            kafka_bootstrap, settings.kafka.deadletter_topic, at_least(len(messages) + 2),
            deadline_s=1.0,
        )  # fmt: skip
    by_topic = {r.value["mqtt_topic"]: r.value for r in dead}
    for topic in off_scheme:
        assert by_topic[topic]["reason"] == "bad_topic", topic
        assert by_topic[topic]["device_id"] is None
    assert by_topic[schema_bad[0]]["reason"] == "schema"
    assert len(late) == len(messages) + 1
    assert max(_dead_letter_counts(late).values()) == 1
