"""`ghgwatch status` reports what the database holds and how far the processor group lags."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console

from adapters import ensure_topics
from adapters.ports import free_port
from core.settings import DbSettings, Settings
from ghgwatch.status import ServicesUnreachable, collect_status, render_status
from ghgwatch.up import ENDPOINTS_FILE, Endpoints
from processors.storage import migrate


async def _seed_db(db_url: str, now: datetime) -> None:
    await migrate(db_url, DbSettings())
    conn = await asyncpg.connect(db_url)
    try:
        for i, (device_id, kind, count) in enumerate(
            [
                ("baotou/kundulun/pic-01", "city", 10),
                ("beifang/dalate/unit-3", "cems", 70),
                ("ordos-coal/buertai/t1-0302", "mine", 5),
            ]
        ):
            network, site, device = device_id.split("/")
            await conn.execute(
                """INSERT INTO devices (device_id, kind, network, site, device, first_seen,
                                        last_seen, readings_count)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                device_id,
                kind,
                network,
                site,
                device,
                now - timedelta(hours=1),
                now - timedelta(minutes=i),
                count,
            )
        for i, (reason, detail, occurrences) in enumerate(
            [("schema", "ts: missing", 3), ("schema", "value: not a number", 1)]
        ):
            await conn.execute(
                """INSERT INTO dead_letters (mqtt_topic, device_id, reason, detail, payload,
                       payload_sha256, received_at, last_received_at, occurrences)
                   VALUES ('t', 'baotou/kundulun/pic-01', $1, $2, 'x', $3, $4, $4, $5)""",
                reason,
                detail,
                bytes([i]) * 32,
                now - timedelta(minutes=10 - i),
                occurrences,
            )
    finally:
        await conn.close()


async def _produce_and_commit(settings: Settings, produced: int, committed: int) -> None:
    """Put ``produced`` records on partition 0 and commit ``committed`` for the group."""
    bootstrap = settings.kafka_bootstrap()
    topic = settings.kafka.readings_topic
    await ensure_topics(settings.kafka, bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(produced):
            await producer.send_and_wait(topic, b"r%d" % i, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.processor.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: committed})
    finally:
        await consumer.stop()


async def test_status_finds_the_services_of_a_running_up_and_reports_everything(
    settings: Settings, tmp_path: Path
) -> None:
    """With no URLs configured, status reads `up`'s endpoints.json and reports readings per
    kind, devices newest first, dead letters by reason and the group's lag per partition."""
    now = datetime.now(UTC).replace(microsecond=0)
    await _seed_db(settings.db_url(), now)
    await _produce_and_commit(settings, produced=7, committed=5)
    data_dir = tmp_path / "up-data"
    data_dir.mkdir()
    (data_dir / ENDPOINTS_FILE).write_text(
        Endpoints(
            pid=os.getpid(),
            started_at=now,
            mqtt_url=settings.mqtt_url(),
            mqtt_topic="ghg/v1/...",
            kafka_bootstrap=settings.kafka_bootstrap(),
            db_url=settings.db_url(),
            metrics_urls=[],
            data_dir=str(data_dir),
            embedded={},
            notes=[],
        ).model_dump_json()
    )
    unconfigured = Settings(
        data_dir=data_dir,
        kafka={  # type: ignore[arg-type]
            "readings_topic": settings.kafka.readings_topic,
            "partitions": settings.kafka.partitions,
        },
        processor={"group_id": settings.processor.group_id},  # type: ignore[arg-type]
    )

    report = await collect_status(unconfigured, device_limit=2)

    assert "endpoints.json" in report.endpoints_source
    assert {k.kind: (k.devices, k.readings) for k in report.kinds} == {
        "city": (1, 10),
        "cems": (1, 70),
        "mine": (1, 5),
    }
    assert report.readings_total == 85
    assert report.devices_total == 3
    assert [d.device_id for d in report.devices] == [
        "baotou/kundulun/pic-01",
        "beifang/dalate/unit-3",
    ]
    [schema] = report.dead_letters
    assert (schema.reason, schema.count, schema.occurrences) == ("schema", 2, 4)
    assert schema.example_detail == "value: not a number"  # the newest one
    assert report.dead_letters_total == 2
    lag = {p.partition: (p.end_offset, p.committed, p.lag) for p in report.lag}
    assert lag[0] == (7, 5, 2)
    assert len(lag) == settings.kafka.partitions
    assert all(v == (0, None, 0) for p, v in lag.items() if p != 0)
    assert report.lag_total == 2

    console = Console(record=True, width=140)
    render_status(report, console)
    text = console.export_text()
    for expected in ("Readings per source kind", "2 of 3", "schema", "lag", "cems"):
        assert expected in text

    # An 80-column terminal still shows the whole dead-letter example on one line.
    narrow = Console(record=True, width=80)
    render_status(report, narrow)
    assert "baotou/kundulun/pic-01: value: not a number" in narrow.export_text()


async def test_status_names_every_unreachable_service(tmp_path: Path) -> None:
    """A closed database port and a closed Kafka port both appear in one clear error."""
    closed = free_port(0)
    settings = Settings(
        data_dir=tmp_path,
        db={"url": f"postgresql://postgres@127.0.0.1:{closed}/ghgwatch"},  # type: ignore[arg-type]
        kafka={"bootstrap": f"127.0.0.1:{closed}"},  # type: ignore[arg-type]
        mqtt={"url": f"mqtt://127.0.0.1:{closed}"},  # type: ignore[arg-type]
    )
    with pytest.raises(ServicesUnreachable) as info:
        await collect_status(settings)
    message = str(info.value)
    assert f"database at 127.0.0.1:{closed}" in message
    assert f"kafka at 127.0.0.1:{closed}" in message
