"""A Mosquitto restart under a continuous stream loses nothing the broker acknowledged.

Issue 9 finding 3: with the old default (a shared subscription) a restart lost every reading
published between the broker coming back and the bridge re-subscribing, because Mosquitto 2.0
does not keep a shared subscription's queue across a restart. The stream here never stops:
a publisher counts each PUBACK and reconnects as soon as the broker is back, so it publishes
inside that window, as devices do.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiomqtt
import pytest
from ingest_helpers import KafkaRecord, read_topic, running_bridge

from core.settings import MqttSettings, Settings
from ghgwatch.embedded import ManagedProcess

DEVICES = 10
# Messages per second of the whole fleet; modest, the machine is shared.
RATE_PER_S = 400
STREAM_BEFORE_S = 2.0
STREAM_AFTER_S = 3.0
PUBLISH_TIMEOUT_S = 2.0
RECONNECT_EVERY_S = 0.02
PUBLISH_WINDOW = 64
READ_DEADLINE_S = 60.0


@dataclass
class CountingPublisher:
    """Publishes unique readings at QoS 1 without pause, counting which the broker PUBACKed."""

    root: str
    port: int
    sent: set[tuple[str, str]] = field(default_factory=set)
    acked: set[tuple[str, str]] = field(default_factory=set)
    connects: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Publish until :attr:`stop` is set, reconnecting at once whenever the broker drops."""
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        seq = 0
        while not self.stop.is_set():
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=None, timeout=PUBLISH_TIMEOUT_S
                ) as client:
                    self.connects += 1
                    client.pending_calls_threshold = PUBLISH_WINDOW * 4
                    window = asyncio.Semaphore(PUBLISH_WINDOW)
                    tasks: set[asyncio.Task[None]] = set()
                    failed = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    start, published = loop.time(), 0
                    while not self.stop.is_set() and not failed.is_set():
                        await window.acquire()
                        device = f"dev-{seq % DEVICES:02d}"
                        ts = (t0 + timedelta(milliseconds=seq)).isoformat()
                        seq += 1
                        topic = f"{self.root}/city/baotou/restart/{device}/data"
                        payload = json.dumps({"ts": ts, "metric": "co2_ppm", "value": 420})
                        key = (f"baotou/restart/{device}", ts.replace("+00:00", "Z"))
                        self.sent.add(key)
                        task = asyncio.create_task(
                            self._one(client, topic, payload, key, window, failed)
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        published += 1
                        ahead_s = published / RATE_PER_S - (loop.time() - start)
                        if ahead_s > 0:
                            await asyncio.sleep(ahead_s)
                    if failed.is_set():
                        # Unacknowledged ones are not counted; reconnect now, as a device does.
                        for task in tasks:
                            task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            except aiomqtt.MqttError:
                pass
            await asyncio.sleep(RECONNECT_EVERY_S)

    async def _one(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: str,
        key: tuple[str, str],
        window: asyncio.Semaphore,
        failed: asyncio.Event,
    ) -> None:
        try:
            await client.publish(topic, payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
            self.acked.add(key)
        except aiomqtt.MqttError:
            failed.set()  # the connection is gone: reconnect rather than publish into it
        finally:
            window.release()


def _keys(records: list[KafkaRecord]) -> Counter[tuple[str, str]]:
    return Counter(
        (r.value["device_id"], reading["ts"]) for r in records for reading in r.value["readings"]
    )


@dataclass(frozen=True)
class RestartOutcome:
    """What one restart under load did to the PUBACKed readings."""

    acked: int
    lost: int
    doubled: int


async def restart_under_load(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
    settings: Settings,
    kafka_bootstrap: str,
    stop_signal: int,
) -> RestartOutcome:
    """Stream, restart the broker with ``stop_signal``, stream on; count lost and doubled."""
    # Saved every second, as deploy/mosquitto saves every 10 s: a SIGKILL finds the bridge's
    # session and subscription on disk.
    broker = await own_mosquitto(persistence=True, extra_conf="autosave_interval 1")
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"url": broker.url})}
    )
    publisher = CountingPublisher(settings.mqtt.topic_root, broker.port)
    async with running_bridge(settings) as bridge:
        stream = asyncio.create_task(publisher.run())
        await asyncio.sleep(STREAM_BEFORE_S)
        broker.stop_signal = stop_signal
        await broker.stop()
        await own_mosquitto(port=broker.port, persistence=True, extra_conf="autosave_interval 1")
        await asyncio.sleep(STREAM_AFTER_S)
        publisher.stop.set()
        await stream
        acked = set(publisher.acked)
        records = await read_topic(
            kafka_bootstrap,
            settings.kafka.readings_topic,
            lambda got: set(_keys(got)) >= acked,
            deadline_s=READ_DEADLINE_S,
        )
        connects = bridge.stats()
    counts = _keys(records)
    lost = len(acked - set(counts))
    doubled = sum(n - 1 for n in counts.values())
    print(
        f"restart ({signal.Signals(stop_signal).name}, share_group="
        f"{settings.mqtt.share_group!r}): sent {len(publisher.sent)}, acked {len(acked)}, "
        f"lost {lost}, doubled {doubled}; publisher connects {publisher.connects}, "
        f"bridge acked {connects.acked}"
    )
    assert set(counts) <= publisher.sent, "Kafka holds readings nobody published"
    assert publisher.connects >= 2, "the restart did not interrupt the stream"
    return RestartOutcome(len(acked), lost, doubled)


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
async def test_a_mosquitto_restart_loses_no_acknowledged_reading_with_the_default_subscription(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
    fast_settings: Callable[..., Settings],
    kafka_bootstrap: str,
    stop_signal: int,
) -> None:
    """Readings stream without pause while Mosquitto (persistence on) is stopped or killed,
    restarted, and the bridge reconnects: with the default subscription every reading the
    broker PUBACKed reaches Kafka, and none twice."""
    default_group = MqttSettings.model_fields["share_group"].default
    settings = fast_settings(mqtt={"share_group": default_group})
    outcome = await restart_under_load(own_mosquitto, settings, kafka_bootstrap, stop_signal)
    assert outcome.acked > 0
    assert outcome.lost == 0
    assert outcome.doubled == 0
