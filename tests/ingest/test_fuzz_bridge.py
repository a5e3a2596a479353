"""Generated hostile payloads through the real bridge: each stored or dead-lettered, no stall.

``GHGWATCH_FUZZ_MESSAGES`` sets the count (20,000 by default, so CI runs it; the issue's
1,000,000 is ``GHGWATCH_FUZZ_MESSAGES=1000000``). The bridge runs as its own process
(``ghgwatch bridge``) so its memory can be watched; the processor stores what it produces.
Every message is accounted for by its index: readings of its device, or a dead letter on its
topic with a reason. Nothing may be missing, the bridge may not die, and its resident memory
stays bounded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from fuzz_payloads import INDEX_RE, messages
from ingest_helpers import DEADLINE_S, bridge_env

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess
from processors import Processor
from processors.storage import migrate

COUNT = int(os.environ.get("GHGWATCH_FUZZ_MESSAGES", "20000"))
# Resident memory the bridge may reach: its steady state is ~90 MB; a leak or a buffer of
# whole payloads (10 MB each) would pass this within a few thousand messages.
MAX_BRIDGE_RSS_MB = 400
MAX_UNACKED = 2000
ACK_DEADLINE_S = max(120.0, COUNT / 500)
ACCOUNT_DEADLINE_S = max(120.0, COUNT / 400)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _publish_all(settings: Settings, deadline_s: float) -> tuple[int, int]:
    """Publish every generated message at QoS 1; returns (published, acknowledged)."""
    host, _, port = settings.mqtt_url().split("://", 1)[1].partition(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    acked = 0

    def on_publish(*_a: object) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    client.connect(host, int(port or 1883))
    client.loop_start()
    try:
        assert connected.wait(30), "the publisher could not connect"
        published = 0
        end = time.monotonic() + deadline_s
        for topic, payload, _note in messages(settings.mqtt.topic_root, COUNT):
            client.publish(topic, payload, qos=1)
            published += 1
            while published - acked > MAX_UNACKED:  # keep paho's queue (and ours) small
                if time.monotonic() > end:
                    return published, acked  # a stall: the caller's assertion says so
                time.sleep(0.005)
        while time.monotonic() < end and acked < published:
            time.sleep(0.2)
        return published, acked
    finally:
        client.disconnect()
        client.loop_stop()


async def _accounted(db_url: str) -> tuple[set[int], set[int], dict[str, int]]:
    conn = await asyncpg.connect(db_url)
    try:
        stored = {
            int(r["device"][1:])
            for r in await conn.fetch("SELECT device FROM devices WHERE network = 'fz'")
        }
        dead: set[int] = set()
        reasons: dict[str, int] = {}
        for r in await conn.fetch("SELECT mqtt_topic, reason FROM dead_letters"):
            m = INDEX_RE.search(r["mqtt_topic"])
            if m:
                dead.add(int(m.group(1)))
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        return stored, dead, reasons
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(max(300.0, ACK_DEADLINE_S + ACCOUNT_DEADLINE_S + 120.0))
async def test_generated_hostile_messages_are_each_stored_or_dead_lettered(
    settings: Settings,
    tmp_path: Path,
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
) -> None:
    """Every one of COUNT generated messages (half valid, half broken in 30 ways, one in ten
    on a topic that breaks the scheme) ends as readings or as a dead letter with a reason; the
    bridge never dies or stalls and its memory stays bounded."""
    # A private broker with the deep queues of the shipped config: the machine's Mosquitto
    # keeps at most 1,000 queued messages for a session that lags and drops the rest after
    # acknowledging them to the publisher, which this test would count as lost.
    broker = await own_mosquitto()
    assert broker.url is not None
    settings = settings.model_copy(
        update={"mqtt": settings.mqtt.model_copy(update={"url": broker.url})}
    )
    await migrate(settings.db_url(), settings.db)
    log = (tmp_path / "bridge.log").open("wb")
    bridge = subprocess.Popen(
        [str(Path(sys.executable).with_name("ghgwatch")), "bridge"],
        env=bridge_env(
            settings, settings.mqtt_url(), share_group="", GHGWATCH_LOG__LEVEL="WARNING"
        ),
        stdout=log,
        stderr=log,
    )
    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    peak_rss = 0.0

    async def watch() -> None:
        nonlocal peak_rss
        while bridge.poll() is None:
            peak_rss = max(peak_rss, _rss_mb(bridge.pid))
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    try:
        # The bridge has subscribed once a probe reading is stored.
        probe_deadline = time.monotonic() + DEADLINE_S
        conn = await asyncpg.connect(settings.db_url())
        host, _, port = settings.mqtt_url().split("://", 1)[1].partition(":")
        while not await conn.fetchval("SELECT count(*) FROM readings"):
            assert time.monotonic() < probe_deadline, "the bridge never came up"
            subprocess.run(
                [
                    "mosquitto_pub",
                    "-h",
                    host,
                    "-p",
                    port or "1883",
                    "-q",
                    "1",
                    "-t",
                    f"{settings.mqtt.topic_root}/city/probe/s0/d0/data",
                    "-m",
                    '{"ts": 1796170000, "metric": "co2_ppm", "value": 420}',
                ],
                check=True,
            )
            await asyncio.sleep(0.5)
        await conn.close()

        published, acked = await asyncio.to_thread(_publish_all, settings, ACK_DEADLINE_S)
        assert acked == published, f"the broker acknowledged {acked} of {published}"

        expected = set(range(COUNT))
        end = time.monotonic() + ACCOUNT_DEADLINE_S
        while True:
            stored, dead, reasons = await _accounted(settings.db_url())
            missing = expected - stored - dead
            if not missing or time.monotonic() > end:
                break
            assert bridge.poll() is None, "the bridge died"
            await asyncio.sleep(1.0)
        sample = sorted(missing)[:5]
        notes = {
            i: note
            for i, (_t, _p, note) in enumerate(messages(settings.mqtt.topic_root, COUNT))
            if i in set(sample)
        }
        assert not missing, f"{len(missing)} of {COUNT} neither stored nor dead-lettered: {notes}"
        assert bridge.poll() is None, "the bridge died"
        assert peak_rss < MAX_BRIDGE_RSS_MB, f"bridge RSS reached {peak_rss:.0f} MB"
        assert "bad_topic" in reasons, reasons
        assert "schema" in reasons, reasons
    finally:
        watcher.cancel()
        stop.set()
        await asyncio.wait_for(processor, 30)
        bridge.terminate()
        try:
            # Its bounded stop (drain 10 s, flush 5 s, tasks 5 s, disconnect 5 s) can take
            # longer than 30 s on a loaded machine.
            bridge.wait(60)
        except subprocess.TimeoutExpired:
            bridge.kill()
            bridge.wait(10)
            raise
        log.close()
