"""Bridges split the load by disjoint topic filters (plain subscriptions), each reading once."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from ingest_helpers import (
    city_readings,
    expected_keys,
    mqtt_host_port,
    publish_many,
    read_topic,
    reading_keys,
    running_bridge,
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from test_bridge_recovery import _all_of, _until

from core.settings import MqttSettings, Settings
from ghgwatch.embedded import start_tansu
from ingest.bridge import retired_filters, subscriptions


def _mine_readings(root: str, count: int) -> list[tuple[str, bytes]]:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    topic = f"{root}/mine/ordos-coal/buertai/t1-0302/data"
    return [
        (
            topic,
            json.dumps(
                {
                    "ts": (t0 + timedelta(seconds=i)).isoformat(),
                    "metric": "ch4_pct_vol",
                    "value": 0.4,
                    "location": "T1",
                }
            ).encode(),
        )
        for i in range(count)
    ]


async def test_two_bridges_with_disjoint_topic_filters_split_the_stream_and_deliver_all_once(
    fast_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Bridge one takes city and CEMS topics, bridge two mine and leak topics, each with a
    plain subscription of its own: each receives only its share, together every reading
    once."""
    kafka = await start_tansu(tmp_path / "tansu", port=0)
    try:
        first = fast_settings(
            kafka={"bootstrap": f"127.0.0.1:{kafka.port}"},
            mqtt={"share_group": "", "topic_filters": ["city/#", "cems/#"]},
        )
        second = first.model_copy(
            update={
                "mqtt": first.mqtt.model_copy(
                    update={
                        "client_id": first.mqtt.client_id + "-b",
                        "topic_filters": ("mine/#", "leak/#"),
                    }
                )
            }
        )
        root = first.mqtt.topic_root
        city = city_readings(root, 120)
        mine = _mine_readings(root, 80)
        async with running_bridge(first) as one, running_bridge(second) as two:
            await publish_many(*mqtt_host_port(first), city + mine)
            records = await read_topic(
                f"127.0.0.1:{kafka.port}",
                first.kafka.readings_topic,
                _all_of(expected_keys(city + mine, root)),
            )
            await _until(
                lambda: one.stats().acked + two.stats().acked == len(city) + len(mine),
                "both bridges to ack everything",
            )
    finally:
        await kafka.stop()
    assert reading_keys(records) == expected_keys(city + mine, root)
    assert len(records) == len(city) + len(mine)
    assert one.stats().received == len(city)
    assert two.stats().received == len(mine)


def test_plain_subscriptions_are_the_default_and_cover_the_whole_root() -> None:
    """By default the bridge subscribes plainly to everything under the root, asking for no
    echo of its own publishes and no retained messages; a share group makes them shared."""
    settings = Settings(mqtt={"topic_root": "ghg/v1"})
    (sub,) = subscriptions(settings)
    assert sub.topic_filter == "ghg/v1/#"
    assert sub.no_local
    assert sub.retain_handling == 2
    shared = Settings(
        mqtt={"topic_root": "ghg/v1", "share_group": "g", "topic_filters": ["mine/#"]}
    )
    (sub,) = subscriptions(shared)
    assert sub.topic_filter == "$share/g/ghg/v1/mine/#"
    assert not sub.no_local


@pytest.mark.parametrize("bad", ["", "/city/#", "city/#/x", "ci#", "$share/g/#", "city/a+"])
def test_a_malformed_topic_filter_is_refused(bad: str) -> None:
    """topic_filters must be MQTT filters below the root."""
    with pytest.raises(ValidationError):
        MqttSettings(topic_filters=(bad,))


async def test_a_kept_session_with_the_former_shared_subscription_does_not_double_messages(
    fast_settings: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    """A bridge upgraded in place finds its session still holding the former default filter
    (a shared subscription of data topics); it drops that filter, so each message comes once
    rather than once per overlapping subscription."""
    settings = fast_settings(mqtt={"share_group": ""})
    root = settings.mqtt.topic_root
    host, port = mqtt_host_port(settings)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 600
    async with aiomqtt.Client(
        host,
        port,
        identifier=settings.mqtt.client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=props,
    ) as former:
        await former.subscribe(retired_filters(settings)[0], qos=1)
    messages = city_readings(root, 60)
    async with running_bridge(settings) as bridge:
        await publish_many(host, port, messages)
        records = await read_topic(
            kafka_bootstrap, settings.kafka.readings_topic, _all_of(expected_keys(messages, root))
        )
        await _until(lambda: bridge.stats().acked >= len(messages), "every message acked")
        late = await read_topic(
            kafka_bootstrap,
            settings.kafka.readings_topic,
            lambda got: len(got) > len(messages),
            deadline_s=1.0,
        )
    assert reading_keys(records) == expected_keys(messages, root)
    assert len(late) == len(messages)
    assert bridge.stats().received == len(messages)
