"""Bridges split the load by disjoint topic filters (plain subscriptions), each reading once."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from pydantic import ValidationError
from test_bridge_recovery import _all_of, _until

from core.settings import MqttSettings, Settings
from ghgwatch.embedded import start_tansu
from ingest.bridge import subscriptions


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
