"""The detector on real tansu + PostgreSQL: e2e leak, replay parity, restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from proc_helpers import mixed_records, produce, total_readings, wait_until

from adapters import client_options, ensure_topics, make_producer
from core.settings import Settings
from processors.detection import DerivedTable
from processors.detector import DetectorService
from processors.replay import iter_csv_blocks, parse_times_ns, replay_csv
from processors.storage import DetectionStore, migrate
from sensors_sim.scenarios import ScenarioConfig, generate_scenarios
from tests.adapters.loop_helpers import check_survives_commit_timeouts
from wire import MineLocation, ReadingRecord, SourceKind, WireReading
from wire.events import DetectionRecord

WAIT_S = 25.0
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _settings(proc_settings: Callable[..., Settings], test_id: str, **det: Any) -> Settings:
    detection = {"group_id": f"det-{test_id}", "commit_interval_s": 0.2, "poll_timeout_ms": 200}
    detection.update(det)
    return proc_settings(kafka={"detections_topic": f"det-{test_id}"}, detection=detection)


def _record(device_id: str, kind: SourceKind, location: str | None, rows: list[Any]) -> bytes:
    network, site, device = device_id.split("/")
    rec = ReadingRecord(
        device_id=device_id,
        kind=kind,
        network=network,
        site=site,
        device=device,
        location=MineLocation(location) if location else None,
        mqtt_topic=f"ghg/v1/{kind.value}/{device_id}/data",
        received_at=rows[-1][0],
        readings=[WireReading(ts=t, metric=m, value=v, flag=f) for t, m, v, f in rows],
    )
    return rec.model_dump_json().encode()


async def _produce(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    await ensure_topics(settings.kafka, settings.kafka_bootstrap(), [settings.kafka.readings_topic])
    producer = make_producer(settings.kafka, settings.kafka_bootstrap())
    await producer.start()
    try:
        futures = [
            await producer.send(settings.kafka.readings_topic, value=v, key=k.encode())
            for k, v in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_topic(settings: Settings, count: int) -> list[DetectionRecord]:
    consumer = AIOKafkaConsumer(
        settings.kafka.detections_topic,
        **client_options(settings.kafka, settings.kafka_bootstrap()),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[DetectionRecord] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                out += [DetectionRecord.model_validate_json(r.value) for r in recs]
    finally:
        await consumer.stop()
    return out


def _csv_messages(path: Path, per_message: int = 6) -> tuple[list[tuple[str, bytes]], int]:
    """Scenario CSV rows as ReadingRecords: per device, `per_message` time steps a message."""
    by_dev: dict[str, list[Any]] = {}
    meta: dict[str, tuple[SourceKind, str | None]] = {}
    n = 0
    for block in iter_csv_blocks(path):
        ts = parse_times_ns(block.time)
        assert block.kind is not None
        assert block.flag is not None
        assert block.location is not None
        for j, t in enumerate(ts.tolist()):
            dev = block.device_id[j]
            when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t // 1000)
            by_dev.setdefault(dev, []).append(
                (when, block.metric[j], float(block.value[j]), block.flag[j])
            )
            meta[dev] = (SourceKind(block.kind[j]), block.location[j] or None)
            n += 1
    messages: list[tuple[int, str, bytes]] = []
    for dev, rows in by_dev.items():
        times = sorted({r[0] for r in rows})
        cut = {t: i // per_message for i, t in enumerate(times)}
        groups: dict[int, list[Any]] = {}
        for r in rows:
            groups.setdefault(cut[r[0]], []).append(r)
        kind, loc = meta[dev]
        for g, grp in groups.items():
            messages.append(
                (int(grp[0][0].timestamp()) * 10 + g % 10, dev, _record(dev, kind, loc, grp))
            )
    messages.sort(key=lambda m: m[0])
    return [(dev, payload) for _, dev, payload in messages], n


async def _db_detections(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch("SELECT * FROM detections ORDER BY started_at, detection_id"))
    finally:
        await conn.close()


async def test_injected_leak_reaches_detections_table_and_topic(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """A simulated release on a mine sensor is stored in `detections` and published."""
    settings = _settings(proc_settings, test_id, warmup_s=600.0)
    await migrate(settings.db_url(), settings.db)
    rng = np.random.default_rng(4)
    n = 600
    values = 0.3 + 0.01 * rng.standard_normal(n)
    values[400:500] += 1.0  # a release that also crosses the T1 alarm level
    messages = []
    for dev in ("ordos/buertai/t1-0001", "ordos/buertai/t1-0002"):
        for i in range(0, n, 6):
            rows = [
                (T0 + timedelta(seconds=10 * k), "ch4_pct_vol",
                 float(values[k] if dev.endswith("1") else 0.3 + 0.01 * rng.standard_normal()),
                 "N")
                for k in range(i, i + 6)
            ]  # fmt: skip
            messages.append((dev, _record(dev, SourceKind.MINE, "T1", rows)))
    await _produce(settings, messages)
    svc = DetectorService(settings)
    stats = await svc.run(max_readings=2 * n, timeout_s=60)
    assert stats.readings == 2 * n
    rows = await _db_detections(settings.db_url())
    found = {(r["device_id"], r["detector"], r["state"]) for r in rows}
    assert ("ordos/buertai/t1-0001", "release", "cleared") in found
    assert ("ordos/buertai/t1-0001", "threshold_alarm", "cleared") in found
    assert not any(r["device_id"].endswith("0002") for r in rows)
    alarm = next(r for r in rows if r["detector"] == "threshold_alarm")
    assert alarm["started_at"] == T0 + timedelta(seconds=4000)
    assert alarm["severity"] == "critical"
    assert alarm["location"] == "T1"
    published = await _read_topic(settings, stats.detections)
    assert len(published) == stats.detections
    assert {p.detection_id for p in published} == {r["detection_id"] for r in rows}


async def test_live_service_matches_replay_and_survives_a_restart(
    proc_settings: Callable[..., Settings], test_id: str, tmp_path: Path
) -> None:
    """The service, stopped half way and restarted, stores exactly replay's detections."""
    settings = _settings(proc_settings, test_id, warmup_records=100_000, batch_max=200)
    await migrate(settings.db_url(), settings.db)
    cfg = ScenarioConfig(hours=6.0, mine_sensors=6, leak_monitors=3, city_stations=1, cems_units=1)
    generate_scenarios(tmp_path, seed=77, cfg=cfg)
    replayed = replay_csv(tmp_path / "readings.csv", settings.detection)
    messages, n = _csv_messages(tmp_path / "readings.csv")
    await _produce(settings, messages)

    first = await DetectorService(settings).run(max_readings=n // 2, timeout_s=60)
    assert 0 < first.readings < n
    second = await DetectorService(settings).run(max_readings=n - first.readings, timeout_s=60)
    assert second.warmup_records > 0
    assert first.readings + second.readings == n

    rows = await _db_detections(settings.db_url())
    expected = {r.detection_id: r for r in replayed.records}
    assert len(expected) >= 4
    assert {r["detection_id"] for r in rows} == set(expected)
    for row in rows:
        want = expected[row["detection_id"]]
        assert row["detector"] == want.detector
        assert row["started_at"] == want.started_at
        cleared = [
            r.ended_at for r in replayed.records
            if r.detection_id == row["detection_id"] and r.ended_at is not None
        ]  # fmt: skip
        assert row["ended_at"] == (cleared[-1] if cleared else None)
    conn = await asyncpg.connect(settings.db_url())
    try:
        mass = await conn.fetchval("SELECT count(*) FROM derived WHERE series = 'co2_mass_t_h'")
        cities = await conn.fetch("SELECT DISTINCT city FROM city_enhancement_1h")
    finally:
        await conn.close()
    assert mass > 300
    assert [r["city"] for r in cities] == ["baotou"]


async def test_leak_published_over_mqtt_reaches_detections_through_the_pipeline(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """MQTT -> bridge -> Kafka -> detector: a release becomes stored detections."""
    import aiomqtt

    from ingest import Bridge

    settings = _settings(proc_settings, test_id, warmup_s=600.0)
    await migrate(settings.db_url(), settings.db)
    rng = np.random.default_rng(8)
    n = 480
    values = 0.25 + 0.01 * rng.standard_normal(n)
    values[300:400] += np.linspace(0.2, 1.0, 100)  # a release ramping past the alarm level
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    device = "ordos-coal/buertai/t1-0302"
    topic = f"{settings.mqtt.topic_root}/mine/{device}/data"
    stop = asyncio.Event()
    bridge_svc = Bridge(settings)
    bridge = asyncio.create_task(bridge_svc.run(stop=stop))
    svc = DetectorService(settings)
    detector = asyncio.create_task(svc.run(stop=stop))
    try:
        # A shared subscription keeps nothing published before the bridge subscribed.
        await bridge_svc.wait_connected(30)
        hostport = settings.mqtt_url().split("://", 1)[1]
        host, _, port = hostport.partition(":")
        async with aiomqtt.Client(host, int(port)) as client:
            for i in range(0, n, 10):
                items = [
                    {"ts": (t0 + timedelta(seconds=10 * k)).isoformat(),
                     "metric": "ch4_pct_vol", "value": round(float(values[k]), 4)}
                    for k in range(i, i + 10)
                ]  # fmt: skip
                payload = {"location": "T1", "readings": items}
                await client.publish(topic, json.dumps(payload).encode(), qos=1)
        deadline = time.monotonic() + 60
        rows: list[asyncpg.Record] = []
        while time.monotonic() < deadline:
            rows = await _db_detections(settings.db_url())
            if {"release", "threshold_alarm"} <= {r["detector"] for r in rows}:
                break
            await asyncio.sleep(0.3)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(bridge, detector)
    found = {r["detector"]: r for r in rows}
    assert "release" in found
    assert "threshold_alarm" in found
    assert found["release"]["started_at"] < found["threshold_alarm"]["started_at"]
    published = await _read_topic(settings, len(rows))
    assert {r["detection_id"] for r in rows} <= {p.detection_id for p in published}


async def test_rebalance_between_two_services_keeps_replay_detections(
    proc_settings: Callable[..., Settings], test_id: str, tmp_path: Path
) -> None:
    """A second service joining mid-stream takes partitions over; together they store
    exactly what replay finds (windows rebuilt from Kafka on the new owner)."""
    settings = _settings(proc_settings, test_id, warmup_records=100_000, batch_max=50)
    await migrate(settings.db_url(), settings.db)
    cfg = ScenarioConfig(hours=6.0, mine_sensors=6, leak_monitors=3, city_stations=1, cems_units=1)
    generate_scenarios(tmp_path, seed=78, cfg=cfg)
    replayed = replay_csv(tmp_path / "readings.csv", settings.detection)
    expected = {r.detection_id for r in replayed.records}
    messages, _n = _csv_messages(tmp_path / "readings.csv")
    half = len(messages) // 2
    await _produce(settings, messages[:half])

    stop = asyncio.Event()
    first = DetectorService(settings)
    second = DetectorService(settings)
    tasks = [asyncio.create_task(first.run(stop=stop))]
    got: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while first.stats.records < half and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks.append(asyncio.create_task(second.run(stop=stop)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # the group has rebalanced once each member holds some partitions
            if all(svc.assigned for svc in (first, second)):
                break
            await asyncio.sleep(0.1)
        await _produce(settings, messages[half:])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {r["detection_id"] for r in await _db_detections(settings.db_url())}
            if first.stats.records + second.stats.records >= len(messages) and got >= expected:
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
    assert second.stats.records > 0
    assert second.stats.warmup_records > 0
    assert got == expected


async def test_late_over_threshold_reading_alarms_live_as_in_replay(
    proc_settings: Callable[..., Settings], test_id: str, tmp_path: Path
) -> None:
    """A crossing reading arriving after newer ones alarms at its own time, live as in replay."""
    settings = _settings(proc_settings, test_id, warmup_records=1_000)
    await migrate(settings.db_url(), settings.db)
    dev = "ordos/buertai/t1-0007"
    rows = [(T0 + timedelta(minutes=k), "ch4_pct_vol", 0.3, "N") for k in range(30)]
    late = (T0 + timedelta(minutes=12, seconds=30), "ch4_pct_vol", 1.05, "N")
    await _produce(
        settings,
        [(dev, _record(dev, SourceKind.MINE, "T1", rows[i : i + 6])) for i in range(0, 30, 6)],
    )
    first = await DetectorService(settings).run(max_readings=30, timeout_s=60)
    assert first.readings == 30
    await _produce(settings, [(dev, _record(dev, SourceKind.MINE, "T1", [late]))])
    second = await DetectorService(settings).run(max_readings=1, timeout_s=60)
    assert second.readings == 1
    assert second.late == 1

    lines = [f"{t.isoformat()},{dev},{m},{v},{f}" for t, m, v, f in [*rows, late]]
    src = tmp_path / "r.csv"
    src.write_text("time,device_id,metric,value,flag\n" + "\n".join(lines) + "\n")
    replayed = replay_csv(src, settings.detection, kind="mine", block_bytes=64)
    assert replayed.late == 1

    stored = await _db_detections(settings.db_url())
    got = [(r["detection_id"], r["detector"], r["started_at"], r["ended_at"]) for r in stored]
    want = [
        (r.detection_id, r.detector, r.started_at, r.ended_at)
        for r in replayed.records
        if r.ended_at is not None
    ]
    assert got == want
    assert [(d, s, e) for _, d, s, e in got] == [("threshold_alarm", late[0], late[0])]


async def test_commits_timing_out_do_not_stop_the_detector(
    proc_settings: Callable[..., Settings], test_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a broker restart the detector exited on `kafka commit offsets: TimeoutError`
    (issue 9, finding 7): now commits are retried and it keeps detecting."""
    settings = _settings(proc_settings, test_id, warmup_records=0)
    await migrate(settings.db_url(), settings.db)
    records = mixed_records(devices_per_kind=2, steps=5)
    svc = DetectorService(settings)

    async def feed() -> int:
        await produce(settings, records)
        return len(records)

    await check_survives_commit_timeouts(
        monkeypatch,
        settings,
        svc,
        group=settings.detection.group_id,
        topics=[settings.kafka.readings_topic],
        feed=feed,
    )
    assert svc.stats.readings == total_readings(records)


# -- an alarm open across a restart (issue 9, finding 5) -------------------------------------

_ALARM_DEV = "ordos/buertai/t1-0101"
# 6 readings a record, 10 s apart: 5 records below the levels, 5 above the power-cut level
# (the alarm and the cut open at reading 30), then 5 records back below: they clear.
_PER_RECORD = 6


def _level_records(first_step: int, count: int, value: float) -> list[tuple[str, bytes]]:
    out = []
    for r in range(count):
        rows = [
            (T0 + timedelta(seconds=10 * k), "ch4_pct_vol", value, "N")
            for k in range(first_step + r * _PER_RECORD, first_step + (r + 1) * _PER_RECORD)
        ]
        out.append((_ALARM_DEV, _record(_ALARM_DEV, SourceKind.MINE, "T1", rows)))
    return out


async def _group_committed(settings: Settings) -> int:
    """The detector group's committed offsets on the readings topic, summed."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka, settings.kafka_bootstrap()),
        group_id=settings.detection.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for p in range(settings.kafka.partitions):
            async with asyncio.timeout(WAIT_S):
                off = await consumer.committed(TopicPartition(settings.kafka.readings_topic, p))
            total += off if off and off > 0 else 0
        return total
    finally:
        await consumer.stop()


_DETECTOR_FIELDS = {
    "group_id", "commit_interval_s", "poll_timeout_ms", "warmup_records", "session_timeout_ms",
    "max_poll_interval_ms",
}  # fmt: skip


def _detector_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(
        GHGWATCH_KAFKA__BOOTSTRAP=settings.kafka_bootstrap(),
        GHGWATCH_KAFKA__READINGS_TOPIC=settings.kafka.readings_topic,
        GHGWATCH_KAFKA__DETECTIONS_TOPIC=settings.kafka.detections_topic,
        GHGWATCH_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        GHGWATCH_DB__URL=settings.db_url(),
        GHGWATCH_DETECTION=settings.detection.model_dump_json(include=_DETECTOR_FIELDS),
        GHGWATCH_METRICS__ENABLED="false",
    )
    return env


@pytest.mark.parametrize("how", ["stopped", "sigkilled"])
async def test_alarm_open_across_a_restart_clears_once_and_resolves_the_alert(
    proc_settings: Callable[..., Settings],
    test_id: str,
    receiver: Any,
    tmp_path: Path,
    how: str,
) -> None:
    """A mine sensor above the alarm and power-cut levels when the detector restarts: the
    restarted detector continues the stored episodes (before, it re-opened them under a new
    onset, so the clear missed the stored rows and the critical alert never resolved)."""
    from alerts import AlertFilter, AlertService, AlertStore

    alerts = {
        "group_id": f"alerts-{test_id}",
        "notifiers": [{"name": "oncall", "type": "webhook", "url": receiver.url("/hook")}],
        "routes": [
            {"name": "all", "severities": ["maintenance", "warning", "critical"],
             "targets": ["oncall"]}
        ],
        "resolve_hold_s": 0.2, "dispatch_poll_s": 0.2, "tick_s": 0.1, "session_timeout_ms": 6000,
    }  # fmt: skip
    # the warm-up re-reads 3 records: it starts after the onset (record 5 of 10)
    settings = proc_settings(
        kafka={"detections_topic": f"det-{test_id}"},
        detection={"group_id": f"det-{test_id}", "commit_interval_s": 0.2,
                   "poll_timeout_ms": 200, "warmup_records": 3},
        alerts=alerts,
    )  # fmt: skip
    await migrate(settings.db_url(), settings.db)
    await ensure_topics(
        settings.kafka, settings.kafka_bootstrap(), [settings.kafka.detections_topic]
    )
    stop = asyncio.Event()
    alert_task = asyncio.create_task(AlertService(settings).run(stop=stop))
    try:
        await _produce(settings, _level_records(0, 5, 0.3) + _level_records(30, 5, 1.8))
        if how == "stopped":
            first = await DetectorService(settings).run(max_readings=60, timeout_s=60)
            assert first.readings == 60
        else:
            log_path = tmp_path / "detector.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "ghgwatch"), "detector"],
                    env=_detector_env(settings),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
                try:

                    async def all_committed() -> bool:
                        return await _group_committed(settings) == 10

                    await wait_until(all_committed, "the detector committed every record", 60)
                finally:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
        opened = await _db_detections(settings.db_url())
        assert {(r["detector"], r["state"]) for r in opened} == {
            ("threshold_alarm", "open"),
            ("power_cut", "open"),
        }
        await _produce(settings, _level_records(60, 5, 0.3))
        second = await DetectorService(settings).run(max_readings=30, timeout_s=60)
        assert second.readings == 30
        assert second.warmup_records == 3

        rows = await _db_detections(settings.db_url())
        assert sorted((r["detector"], r["state"]) for r in rows) == [
            ("power_cut", "cleared"),
            ("threshold_alarm", "cleared"),
        ]
        assert {r["detection_id"] for r in rows} == {r["detection_id"] for r in opened}
        assert all(r["started_at"] == T0 + timedelta(seconds=300) for r in rows)
        published = await _read_topic(settings, 4)
        states: dict[str, list[str]] = {}
        for p in published:
            states.setdefault(p.detection_id, []).append(p.state.value)
        assert states == {r["detection_id"]: ["open", "cleared"] for r in rows}

        async def resolved() -> bool:
            async with AlertStore(settings.db_url(), settings.alerts, settings.db) as store:
                found = await store.list_alerts(AlertFilter())
            return bool(found) and all(a.state == "resolved" for a in found)

        await wait_until(resolved, "the alert resolved", 30)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await alert_task


async def test_open_detections_left_by_an_older_detector_are_cleared_on_restart(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """Orphans the old restart path left (two alarms stored open while the readings are
    long below the level) are cleared once, naming why, when the detector restarts and its
    rebuilt state has no alarm."""
    settings = _settings(proc_settings, test_id, warmup_records=3)
    await migrate(settings.db_url(), settings.db)
    await _produce(settings, _level_records(0, 5, 0.3))
    first = await DetectorService(settings).run(max_readings=30, timeout_s=60)
    assert first.readings == 30
    orphans = [
        DetectionRecord(
            detection_id=f"orphan-{k}", state="open", device_id=_ALARM_DEV, kind="mine",
            network="ordos", site="buertai", metric="ch4_pct_vol", detector="threshold_alarm",
            severity="critical", started_at=T0 - timedelta(hours=2 - k), score=1.2, value=1.2,
            threshold=1.0, location="T1",
        )
        for k in range(2)
    ]  # fmt: skip
    async with DetectionStore(settings.db_url(), settings.db) as store:
        await store.write(orphans, DerivedTable.empty())
    await _produce(settings, _level_records(30, 2, 0.3))
    second = await DetectorService(settings).run(max_readings=12, timeout_s=60)
    assert second.warmup_records == 3
    assert second.restart_cleared == 2
    rows = await _db_detections(settings.db_url())
    assert [(r["detection_id"], r["state"]) for r in rows] == [
        ("orphan-0", "cleared"),
        ("orphan-1", "cleared"),
    ]
    # the rebuilt state has no alarm: both are closed for that reason
    assert [json.loads(r["evidence"]) for r in rows] == [{"restart_closed": 1.0}] * 2
    published = await _read_topic(settings, 2)
    assert sorted((p.detection_id, p.state.value) for p in published) == [
        ("orphan-0", "cleared"),
        ("orphan-1", "cleared"),
    ]
