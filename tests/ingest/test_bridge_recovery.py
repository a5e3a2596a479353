"""The bridge recovers by itself: broker restarts, Kafka outages, and shares load in a group."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from ingest_helpers import (
    DEADLINE_S,
    city_readings,
    expected_keys,
    mqtt_host_port,
    publish_many,
    read_topic,
    reading_keys,
    running_bridge,
)

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, start_tansu
from ingest import Bridge


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds, failing the test after DEADLINE_S."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def _all_of(expected: set[tuple[str, str, str]]) -> Callable[..., bool]:
    return lambda records: reading_keys(records) >= expected


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "amnesiac"])
async def test_bridge_reconnects_and_resubscribes_after_mosquitto_restart(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
    fast_settings: Callable[..., Settings],
    kafka_bootstrap: str,
    persistence: bool,
) -> None:
    """After Mosquitto stops and starts again on the same port, the bridge reconnects and
    re-subscribes on its own: readings published after the restart reach Kafka (even when
    the broker forgot every session and subscription)."""
    broker = await own_mosquitto(persistence=persistence)
    settings = fast_settings(mqtt={"url": f"mqtt://127.0.0.1:{broker.port}"})
    root = settings.mqtt.topic_root
    before = city_readings(root, 50, device="pic-01")
    after = city_readings(root, 50, device="pic-02")
    async with running_bridge(settings) as bridge:
        await publish_many("127.0.0.1", broker.port, before)
        await read_topic(
            kafka_bootstrap, settings.kafka.readings_topic, _all_of(expected_keys(before, root))
        )
        await broker.stop()
        await _until(lambda: not bridge.connected, "the bridge to notice the broker is gone")
        restarted = await own_mosquitto(port=broker.port, persistence=persistence)
        assert restarted.port == broker.port
        await bridge.wait_connected(DEADLINE_S)
        await publish_many("127.0.0.1", restarted.port, after)
        records = await read_topic(
            kafka_bootstrap,
            settings.kafka.readings_topic,
            _all_of(expected_keys(before + after, root)),
        )
        await _until(lambda: bridge.stats().in_flight == 0, "every message to be settled")
    assert reading_keys(records) == expected_keys(before + after, root)
    assert bridge.metrics.mqtt_connects >= 2


async def test_nothing_is_acked_while_kafka_is_down_and_everything_arrives_after(
    fast_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """With Kafka down the bridge takes no more than ReceiveMaximum messages, acknowledges
    none and drops none (the broker holds the rest); once a broker is back on the same
    address, every reading published meanwhile reaches Kafka and is acked."""
    kafka = await start_tansu(tmp_path / "tansu-1", port=0)
    bootstrap = f"127.0.0.1:{kafka.port}"
    receive_maximum = 50
    settings = fast_settings(
        kafka={"bootstrap": bootstrap, "request_timeout_s": 2.0},
        mqtt={"receive_maximum": receive_maximum},
    )
    root = settings.mqtt.topic_root
    messages = city_readings(root, 300)
    try:
        async with running_bridge(settings) as bridge:
            await kafka.stop()
            await publish_many(*mqtt_host_port(settings), messages)
            await _until(
                lambda: (
                    bridge.stats().received >= receive_maximum and bridge.stats().produce_errors > 0
                ),
                "the bridge to fill its window and fail to produce",
            )
            stats = bridge.stats()
            assert stats.received == receive_maximum
            assert stats.in_flight == receive_maximum
            assert stats.acked == 0
            assert stats.dropped_total == 0

            # tansu keeps topics in memory only: the new broker starts empty.
            kafka = await start_tansu(tmp_path / "tansu-2", port=kafka.port)
            assert f"127.0.0.1:{kafka.port}" == bootstrap
            # The bridge creates its topics on the new broker itself before producing again.
            # The test must not: tansu takes a second CreateTopics of a topic that was just
            # created as a new topic and drops what it had already confirmed (seen as the
            # flaky failure of issue 9 finding 10: all 300 acked, the retried window gone).
            # Acked means in Kafka: wait for the acks first (recovery under load may take a
            # while), then Kafka must already hold every reading. ">=": a redelivery after a
            # reconnect is acked again (at-least-once), so "==" could be stepped over.
            await _until(lambda: bridge.stats().acked >= len(messages), "every message to be acked")
            records = await read_topic(
                bootstrap, settings.kafka.readings_topic, _all_of(expected_keys(messages, root))
            )
    finally:
        await kafka.stop()
    assert reading_keys(records) == expected_keys(messages, root)
    assert bridge.stats().dropped_total == 0


async def test_two_bridges_in_one_share_group_split_the_messages_and_deliver_all(
    fast_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Two bridges with their own client ids in one shared-subscription group each take part
    of the stream, and together deliver every reading once."""
    # A private broker: under the whole suite's load the shared tansu once returned this
    # test's records incompletely (seen once in CI; not reproduced in isolation).
    kafka = await start_tansu(tmp_path / "tansu", port=0)
    try:
        await _two_bridges_split(fast_settings, f"127.0.0.1:{kafka.port}")
    finally:
        await kafka.stop()


async def _two_bridges_split(fast_settings: Callable[..., Settings], kafka_bootstrap: str) -> None:
    first = fast_settings(kafka={"bootstrap": kafka_bootstrap})
    second = first.model_copy(
        update={"mqtt": first.mqtt.model_copy(update={"client_id": first.mqtt.client_id + "-b"})}
    )
    root = first.mqtt.topic_root
    messages = [m for d in range(4) for m in city_readings(root, 100, device=f"pic-{d:02d}")]
    async with running_bridge(first) as one, running_bridge(second) as two:
        await publish_many(*mqtt_host_port(first), messages)
        records = await read_topic(
            kafka_bootstrap, first.kafka.readings_topic, _all_of(expected_keys(messages, root))
        )
        await _until(
            lambda: one.stats().acked + two.stats().acked == len(messages),
            "both bridges to ack everything",
        )
    assert reading_keys(records) == expected_keys(messages, root)
    assert one.stats().received > 0
    assert two.stats().received > 0
    assert one.stats().received + two.stats().received == len(messages)


async def test_max_messages_stops_after_that_many_with_all_of_them_acked(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """run(max_messages=n) returns once n messages came, each of them produced and acked."""
    root = settings.mqtt.topic_root
    messages = city_readings(root, 40)
    bridge = Bridge(settings)
    task = asyncio.create_task(bridge.run(max_messages=len(messages), timeout_s=DEADLINE_S))
    await bridge.wait_connected(DEADLINE_S)
    await publish_many(*mqtt_host_port(settings), messages)
    async with asyncio.timeout(DEADLINE_S):
        stats = await task
    assert stats.received == len(messages)
    assert stats.acked == len(messages)
    assert stats.in_flight == 0
    records = await read_topic(
        kafka_bootstrap, settings.kafka.readings_topic, _all_of(expected_keys(messages, root))
    )
    assert reading_keys(records) == expected_keys(messages, root)
