"""The bridge on real Mosquitto and tansu: validation, dead letters, device status, acks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from ingest_helpers import (
    DEADLINE_S,
    at_least,
    mqtt_host_port,
    publish_many,
    read_topic,
    reading_keys,
    running_bridge,
)

from ghgwatch.settings import Settings


def _ts(minutes_ago: int = 5) -> str:
    return (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)).isoformat()


async def test_valid_readings_of_every_kind_reach_kafka_keyed_by_device(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """Single and batch payloads of all four source kinds land on the readings topic, keyed by
    device_id, with every reading they carried."""
    root = settings.mqtt.topic_root
    ts = _ts()
    messages = [
        (
            f"{root}/city/baotou/kundulun/pic-01/data",
            json.dumps({"ts": ts, "metric": "co2_ppm", "value": 431.2}).encode(),
        ),
        (
            f"{root}/city/ordos/kangbashi/pic-02/data",
            json.dumps(
                {
                    "ts": ts,
                    "readings": [
                        {"metric": "co2_ppm", "value": 425.0},
                        {"metric": "ch4_ppb", "value": 2011.0},
                        {"metric": "wind_speed_m_s", "value": 3.2},
                    ],
                }
            ).encode(),
        ),
        (
            f"{root}/cems/beifang/dalate/unit-3/data",
            json.dumps({"ts": ts, "metric": "co2_pct_vol", "value": 11.8}).encode(),
        ),
        (
            f"{root}/cems/beifang/dalate/unit-4/data",
            json.dumps(
                {
                    "ts": ts,
                    "readings": [
                        {"metric": "co2_pct_vol", "value": 12.1},
                        {"metric": "flow_m3_h", "value": 1.6e6},
                    ],
                }
            ).encode(),
        ),
        (
            f"{root}/mine/ordos-coal/buertai/t1-0302/data",
            json.dumps(
                {"ts": ts, "metric": "ch4_pct_vol", "value": 0.31, "location": "T1"}
            ).encode(),
        ),
        (
            f"{root}/mine/ordos-coal/buertai/gw-01/data",
            json.dumps(
                {
                    "ts": ts,
                    "location": "T0",
                    "readings": [
                        {"metric": "ch4_pct_vol", "value": 0.4},
                        {"metric": "co_ppm", "value": 3.0},
                    ],
                }
            ).encode(),
        ),
        (
            f"{root}/leak/changqing/sulige-cs7/ch4-04/data",
            json.dumps({"ts": ts, "metric": "ch4_ppm", "value": 2.1, "flag": "C"}).encode(),
        ),
        (
            f"{root}/leak/changqing/sulige-cs7/ch4-05/data",
            json.dumps(
                {
                    "ts": ts,
                    "readings": [
                        {"metric": "ch4_ppm", "value": 2.3},
                        {"metric": "wind_dir_deg", "value": 270.0},
                    ],
                }
            ).encode(),
        ),
    ]
    async with running_bridge(settings) as bridge:
        await publish_many(*mqtt_host_port(settings), messages)
        records = await read_topic(
            kafka_bootstrap, settings.kafka.readings_topic, at_least(len(messages))
        )
        async with asyncio.timeout(DEADLINE_S):
            while bridge.stats().acked < len(messages):
                await asyncio.sleep(0.05)
    by_key = {r.key: r.value for r in records}
    assert len(records) == len(messages)
    assert set(by_key) == {
        b"baotou/kundulun/pic-01",
        b"ordos/kangbashi/pic-02",
        b"beifang/dalate/unit-3",
        b"beifang/dalate/unit-4",
        b"ordos-coal/buertai/t1-0302",
        b"ordos-coal/buertai/gw-01",
        b"changqing/sulige-cs7/ch4-04",
        b"changqing/sulige-cs7/ch4-05",
    }
    for key, value in by_key.items():
        assert value["device_id"] == key.decode()
    assert {r["metric"] for r in by_key[b"ordos/kangbashi/pic-02"]["readings"]} == {
        "co2_ppm",
        "ch4_ppb",
        "wind_speed_m_s",
    }
    assert by_key[b"ordos-coal/buertai/t1-0302"]["location"] == "T1"
    assert by_key[b"ordos-coal/buertai/gw-01"]["kind"] == "mine"
    assert by_key[b"changqing/sulige-cs7/ch4-04"]["readings"][0]["flag"] == "C"
    assert len(reading_keys(records)) == 13
    stats = bridge.stats()
    assert stats.accepted == len(messages)
    assert stats.produced == {"readings": len(messages)}
    assert stats.in_flight == 0
