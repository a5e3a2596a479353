"""The bridge on real Mosquitto and tansu: validation, dead letters, device status, acks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from ingest_helpers import (
    DEADLINE_S,
    at_least,
    mqtt_host_port,
    publish_many,
    read_topic,
    reading_keys,
    running_bridge,
)

from core.errors import FatalError
from core.settings import Settings
from ghgwatch.embedded import ManagedProcess
from ingest import Bridge, CredentialsRefused, SessionClosed


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


async def test_malformed_messages_are_dead_lettered_and_the_device_hears_why(
    settings: Settings, kafka_bootstrap: str
) -> None:
    """Bad JSON, unknown metric, wrong kind, out of range and naive ts go to the dead-letter
    topic with their reason and the device hears each reason on its status topic; a bad topic
    (no device) is only dead-lettered."""
    root = settings.mqtt.topic_root
    device = f"{root}/city/ordos/kangbashi/pic-09"
    ts = _ts()
    bad = [
        (f"{device}/data", b"{not json", "malformed_json"),
        (
            f"{device}/data",
            json.dumps({"ts": ts, "metric": "no2_ppb", "value": 4}).encode(),
            "unknown_metric",
        ),
        (
            f"{device}/data",
            json.dumps({"ts": ts, "metric": "co2_pct_vol", "value": 4}).encode(),
            "metric_not_for_kind",
        ),
        (
            f"{device}/data",
            json.dumps({"ts": ts, "metric": "co2_ppm", "value": 1e7}).encode(),
            "out_of_range",
        ),
        (
            f"{device}/data",
            json.dumps({"ts": "2026-01-01T00:00:00", "metric": "co2_ppm", "value": 420}).encode(),
            "schema",
        ),
    ]
    bad_topic = (
        f"{root}/volcano/ordos/kangbashi/pic-09/data",
        json.dumps({"ts": ts, "metric": "co2_ppm", "value": 420}).encode(),
        "bad_topic",
    )
    host, port = mqtt_host_port(settings)
    heard: list[dict[str, str]] = []
    async with running_bridge(settings) as bridge:
        async with aiomqtt.Client(host, port) as device_client:
            await device_client.subscribe(f"{device}/status", qos=1)
            for topic, payload, _reason in [*bad, bad_topic]:
                await device_client.publish(topic, payload, qos=1)
            async with asyncio.timeout(DEADLINE_S):
                async for msg in device_client.messages:
                    assert isinstance(msg.payload, bytes)
                    heard.append(json.loads(msg.payload))
                    if len(heard) == len(bad):
                        break
        records = await read_topic(
            kafka_bootstrap, settings.kafka.deadletter_topic, at_least(len(bad) + 1)
        )
        async with asyncio.timeout(DEADLINE_S):
            while bridge.stats().acked < len(bad) + 1:
                await asyncio.sleep(0.05)
    assert [h["reason"] for h in heard] == [reason for _t, _p, reason in bad]
    # Retained: a device that connects later still learns why its last message was refused.
    async with aiomqtt.Client(host, port) as late_client:
        await late_client.subscribe(f"{device}/status", qos=1)
        async with asyncio.timeout(DEADLINE_S):
            retained = await anext(aiter(late_client.messages))
    assert retained.retain
    assert isinstance(retained.payload, bytes)
    assert json.loads(retained.payload)["reason"] == bad[-1][2]
    assert all(h["status"] == "rejected" and h["topic"] == f"{device}/data" for h in heard)
    assert heard[0]["payload_excerpt"] == "{not json"
    by_payload = {base64.b64decode(r.value["payload_b64"]): r for r in records}
    assert len(records) == len(bad) + 1
    for topic, payload, reason in [*bad, bad_topic]:
        record = by_payload[payload] if reason != "bad_topic" else by_payload[bad_topic[1]]
        assert record.value["reason"] == reason
        assert record.value["mqtt_topic"] == topic
        assert record.value["detail"]
    assert by_payload[bad[0][1]].key == b"ordos/kangbashi/pic-09"
    bad_topic_record = next(r for r in records if r.value["reason"] == "bad_topic")
    assert bad_topic_record.value["device_id"] is None
    stats = bridge.stats()
    assert stats.rejected_total == len(bad) + 1
    assert stats.status_published == len(bad)
    assert stats.produced == {"deadletter": len(bad) + 1}
    assert (
        await read_topic(
            kafka_bootstrap, settings.kafka.readings_topic, at_least(1), deadline_s=0.5
        )
        == []
    )


async def test_valid_data_after_a_rejection_clears_the_retained_status(
    settings: Settings,
) -> None:
    """A device that was told why its message was refused and then sends valid data no longer
    finds the old rejection retained on its status topic."""
    root = settings.mqtt.topic_root
    device = f"{root}/city/ordos/kangbashi/pic-10"
    good = json.dumps({"ts": _ts(), "metric": "co2_ppm", "value": 420.0}).encode()
    host, port = mqtt_host_port(settings)

    async def retained_status() -> list[bytes]:
        """What a newly connecting device reads on its status topic within half a second."""
        async with aiomqtt.Client(host, port) as late_client:
            await late_client.subscribe(f"{device}/status", qos=1)
            got: list[bytes] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    async for msg in late_client.messages:
                        assert isinstance(msg.payload, bytes)
                        got.append(msg.payload)
            return got

    async with running_bridge(settings) as bridge:
        await publish_many(host, port, [(f"{device}/data", b"{not json")])
        async with asyncio.timeout(DEADLINE_S):
            while bridge.stats().status_published < 1:
                await asyncio.sleep(0.05)
        [rejection] = await retained_status()
        assert json.loads(rejection)["reason"] == "malformed_json"
        await publish_many(host, port, [(f"{device}/data", good)])
        async with asyncio.timeout(DEADLINE_S):
            while (await retained_status()) != []:
                await asyncio.sleep(0.1)
        assert bridge.stats().status_published == 1  # the clearing is not a rejection notice


async def test_refused_credentials_raise_fatal_error_instead_of_retrying(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
    fast_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """A broker that refuses the bridge's password makes run() raise CredentialsRefused (a
    FatalError) promptly; the bridge does not loop on reconnects."""
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_passwd", "-b", str(passwords), "bridge", "right-password"
    )
    assert await proc.wait() == 0
    passwords.chmod(0o600)
    broker = await own_mosquitto(extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    settings = fast_settings(
        mqtt={
            "url": f"mqtt://127.0.0.1:{broker.port}",
            "username": "bridge",
            "password": "wrong-password",
        }
    )
    bridge = Bridge(settings)
    with pytest.raises(FatalError, match="refused") as caught:
        async with asyncio.timeout(DEADLINE_S):
            await bridge.run()
    assert isinstance(caught.value, CredentialsRefused)
    assert bridge.metrics.mqtt_connects == 0

    # The same broker lets the right password in: the refusal was about the credentials.
    good = fast_settings(
        mqtt={
            "url": f"mqtt://127.0.0.1:{broker.port}",
            "username": "bridge",
            "password": "right-password",
        }
    )
    async with running_bridge(good) as running:
        assert running.connected


async def test_a_bridge_runs_only_once(settings: Settings) -> None:
    """A finished bridge refuses to run again (build a new one)."""
    bridge = Bridge(settings)
    await bridge.run(timeout_s=0.5)
    with pytest.raises(SessionClosed):
        await bridge.run(timeout_s=0.5)
