"""Silent devices raise ``no_data`` on the wall clock (issue 13, item 3): real Mosquitto, the
real bridge, tansu and PostgreSQL, the detector driven with a short floor."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import asyncpg
from proc_helpers import wait_until

from core.settings import Settings
from ingest import Bridge
from processors.detection.liveness import LivenessTracker
from processors.detector import DetectorService
from processors.storage import migrate
from wire.events import WILL_PAYLOAD

DEVICE = "ordos-coal/buertai/t1-0401"
# A device whose last will the broker publishes when it dies (paho, as a device would).
_DEVICE_SCRIPT = """
import json, sys, time
import paho.mqtt.client as mqtt
host, port, topic, will, reading = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sys.argv[6])
c.will_set(topic, will, qos=1)
c.connect(host, port, keepalive=30)
c.loop_start()
c.publish(topic, reading, qos=1).wait_for_publish(10)
print("ready", flush=True)
time.sleep(120)
"""


def _settings(proc_settings: Callable[..., Settings], test_id: str, **det: Any) -> Settings:
    detection = {
        "group_id": f"det-{test_id}", "commit_interval_s": 0.2, "poll_timeout_ms": 200,
        "no_data_check_s": 0.2, **det,
    }  # fmt: skip
    return proc_settings(kafka={"detections_topic": f"det-{test_id}"}, detection=detection)


def _reading(value: float = 0.3) -> bytes:
    now = datetime.now(UTC).isoformat()
    return json.dumps(
        {"location": "T1", "readings": [{"ts": now, "metric": "ch4_pct_vol", "value": value}]}
    ).encode()


async def _no_data_rows(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(
            await conn.fetch(
                "SELECT * FROM detections WHERE detector = 'no_data' ORDER BY started_at"
            )
        )
    finally:
        await conn.close()


def _mqtt(settings: Settings) -> tuple[str, int, str]:
    host, _, port = settings.mqtt_url().split("://", 1)[1].partition(":")
    return host, int(port), f"{settings.mqtt.topic_root}/mine/{DEVICE}/data"


async def test_a_device_that_stops_publishing_raises_no_data_and_clears_on_resume(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """Readings over MQTT, then silence: no_data (critical, a mine sensor) opens once the
    device is silent longer than the floor, with no reading arriving at all; the next reading
    clears it under the same id."""
    settings = _settings(proc_settings, test_id, no_data_floor_s=2.0)
    await migrate(settings.db_url(), settings.db)
    host, port, topic = _mqtt(settings)
    stop = asyncio.Event()
    bridge = Bridge(settings)
    detector = DetectorService(settings)
    tasks = [
        asyncio.create_task(bridge.run(stop=stop)),
        asyncio.create_task(detector.run(stop=stop)),
    ]
    try:
        await bridge.wait_connected(30)
        async with aiomqtt.Client(host, port) as client:
            for _ in range(5):
                await client.publish(topic, _reading(), qos=1)
                await asyncio.sleep(0.3)

            async def opened() -> bool:
                return any(r["state"] == "open" for r in await _no_data_rows(settings.db_url()))

            await wait_until(opened, "no_data opened for the silent device", 60)
            (row,) = await _no_data_rows(settings.db_url())
            assert (row["device_id"], row["kind"], row["severity"]) == (DEVICE, "mine", "critical")
            assert row["metric"] == "*"
            assert row["location"] == "T1"
            assert detector.stats.no_data_opened == 1
            await client.publish(topic, _reading(), qos=1)

            async def cleared() -> bool:
                rows = await _no_data_rows(settings.db_url())
                return bool(rows) and all(r["state"] == "cleared" for r in rows)

            await wait_until(cleared, "no_data cleared when the device is back", 60)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)
    rows = await _no_data_rows(settings.db_url())
    assert [r["detection_id"] for r in rows] == [row["detection_id"]]
    assert rows[0]["ended_at"] > rows[0]["started_at"]


async def test_a_last_will_raises_no_data_at_once(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """A device with an MQTT last will dies (SIGKILL): the broker publishes the will, the
    bridge forwards it as a device event (not a rejection) and the detector raises no_data at
    once, long before the silence floor (an hour here)."""
    settings = _settings(proc_settings, test_id, no_data_floor_s=3600.0)
    await migrate(settings.db_url(), settings.db)
    host, port, topic = _mqtt(settings)
    stop = asyncio.Event()
    bridge = Bridge(settings)
    detector = DetectorService(settings)
    tasks = [
        asyncio.create_task(bridge.run(stop=stop)),
        asyncio.create_task(detector.run(stop=stop)),
    ]
    device = subprocess.Popen(
        [sys.executable, "-c", _DEVICE_SCRIPT, host, str(port), topic,
         json.dumps(WILL_PAYLOAD), _reading().decode(), f"dev-{test_id}"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        await bridge.wait_connected(30)
        assert device.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(device.stdout.readline), 60)
        assert line.strip() == b"ready"

        async def seen() -> bool:
            return len(detector.liveness) > 0

        await wait_until(seen, "the device's reading reached the detector", 60)
        killed_at = time.monotonic()
        device.send_signal(signal.SIGKILL)
        device.wait(10)

        async def opened() -> bool:
            return any(r["state"] == "open" for r in await _no_data_rows(settings.db_url()))

        await wait_until(opened, "no_data from the last will", 60)
        assert time.monotonic() - killed_at < settings.detection.no_data_floor_s
        (row,) = await _no_data_rows(settings.db_url())
        assert json.loads(row["evidence"])["will"] == 1.0
        assert row["severity"] == "critical"
        # the will is an event, not a rejection: no dead letter, no rejection status to the device
        assert bridge.metrics.produced.get("events") == 1
        assert bridge.metrics.rejected == {}
        assert bridge.metrics.status_published == 0
    finally:
        if device.poll() is None:
            device.kill()
            device.wait(10)
        if device.stdout is not None:
            device.stdout.close()
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*tasks)


def test_tracker_times_silence_from_the_floor_and_the_learned_pattern() -> None:
    """Pure: silent past the floor and the pattern's allowance -> one OPEN; back -> CLEARED."""
    from core.settings import DetectionSettings

    t = LivenessTracker(DetectionSettings(no_data_floor_s=10.0))
    assert t.seen("n/s/d", "leak", None, 1000.0) is None
    assert t.due(1009.0, lambda _d: 0.0) == []
    assert t.due(1011.0, lambda _d: 30.0) == []  # a learned pause of 30 s is not silence
    assert t.due(1031.0, lambda _d: 30.0) == ["n/s/d"]
    rec = t.open("n/s/d", 1031.0, 30.0)
    assert rec is not None
    assert (rec.detector, rec.severity.value, rec.state.value) == ("no_data", "warning", "open")
    assert t.open("n/s/d", 1032.0, 30.0) is None
    assert t.due(1040.0, lambda _d: 0.0) == []
    back = t.seen("n/s/d", "leak", None, 1050.0)
    assert back is not None
    assert (back.detection_id, back.state.value) == (rec.detection_id, "cleared")


async def test_a_device_silent_across_a_restart_keeps_one_no_data_cleared_on_resume(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """no_data open when the detector restarts: the restarted detector continues the stored
    one (no second OPEN) and the device's next reading clears it."""
    from proc_helpers import produce, reading_record

    from wire import SourceKind

    settings = _settings(proc_settings, test_id, no_data_floor_s=2.0, warmup_records=10)
    await migrate(settings.db_url(), settings.db)
    rec = reading_record(SourceKind.MINE, 1, 0)
    # one message: no interval learned yet, so the floor alone times the silence
    await produce(settings, [rec])
    for round_ in range(2):
        stop = asyncio.Event()
        svc = DetectorService(settings)
        task = asyncio.create_task(svc.run(stop=stop))
        try:

            async def silent(svc: DetectorService = svc) -> bool:
                return svc.liveness.is_open(rec.device_id)

            await wait_until(silent, f"no_data open in run {round_}", 60)
            if round_ == 1:
                await produce(settings, [reading_record(SourceKind.MINE, 1, 2)])

                async def back(svc: DetectorService = svc) -> bool:
                    return svc.stats.no_data_cleared == 1

                await wait_until(back, "no_data cleared after the restart", 60)
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await task
    assert svc.stats.no_data_opened == 0  # continued, not opened again
    rows = await _no_data_rows(settings.db_url())
    assert [(r["device_id"], r["state"]) for r in rows] == [(rec.device_id, "cleared")]
