"""A bridge killed with SIGKILL mid-stream loses nothing: the broker redelivers what was unacked.

Run with MQTT v5 (shared subscription) and with MQTT 3.1.1 (plain subscription, the protocol
``up`` uses on amqtt), both on Mosquitto, which queues for a 3.1.1 persistent session too.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ingest_helpers import (
    DEADLINE_S,
    at_least,
    bridge_env,
    city_readings,
    expected_keys,
    publish_many,
    read_topic,
    reading_keys,
)

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess

READINGS = 6000
# 3.1.1 runs the same scenario with fewer readings: it tests the session flags, not volume.
READINGS_V311 = 3000
KILL_AFTER = 500
# A steady stream (about 5,000 messages/s at most) so the kill lands while it still flows.
PACE_EVERY = 100
PACE_S = 0.02


def _env(settings: Settings, mqtt_port: int, protocol: str) -> dict[str, str]:
    return bridge_env(
        settings,
        f"mqtt://127.0.0.1:{mqtt_port}",
        share_group=None if protocol == "5" else "",
        GHGWATCH_MQTT__PROTOCOL=protocol,
        GHGWATCH_LOG__FORMAT="json",
    )


@contextmanager
def _bridge_process(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("ghgwatch")), "bridge"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def _wait_for_log(log_path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while text not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("protocol", "readings"), [("5", READINGS), ("3.1.1", READINGS_V311)])
async def test_sigkilled_bridge_loses_no_reading_after_restart_with_same_client_id(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
    settings: Settings,
    tmp_path: Path,
    protocol: str,
    readings: int,
) -> None:
    """SIGKILL the bridge process while thousands of QoS 1 readings stream in, start it again
    with the same client id (MQTT v5 or 3.1.1): every published reading reaches Kafka."""
    broker = await own_mosquitto()
    env = _env(settings, broker.port, protocol)
    root = settings.mqtt.topic_root
    messages = [m for d in range(3) for m in city_readings(root, readings // 3, device=f"p{d}")]
    expected = expected_keys(messages, root)
    log_path = tmp_path / "bridge.log"
    topic = settings.kafka.readings_topic
    bootstrap = settings.kafka_bootstrap()

    with _bridge_process(env, log_path) as first:
        await _wait_for_log(log_path, "mqtt connected", first)
        assert f'"protocol": "{protocol}"' in log_path.read_text()
        publisher = asyncio.create_task(
            publish_many("127.0.0.1", broker.port, messages, pace_every=PACE_EVERY, pace_s=PACE_S)
        )
        await read_topic(bootstrap, topic, at_least(KILL_AFTER))
        assert not publisher.done(), "the stream ended before the kill"
        first.kill()
        first.wait()
    assert first.returncode == -9
    await publisher  # the rest is queued by the broker for the dead bridge's session
    # Everything on Kafka right now (read until the deadline): the killed bridge's share.
    partial = reading_keys(await read_topic(bootstrap, topic, lambda _r: False, deadline_s=1.5))
    assert KILL_AFTER <= len(partial) < len(expected), "the kill came too late to test anything"

    with _bridge_process(env, log_path) as second:
        records = await read_topic(bootstrap, topic, lambda r: reading_keys(r) >= expected)
        second.terminate()
        async with asyncio.timeout(DEADLINE_S):
            while second.poll() is None:
                await asyncio.sleep(0.05)
    assert second.returncode == 0, log_path.read_text()[-2000:]
    assert reading_keys(records) == expected
