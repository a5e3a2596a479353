"""Helpers for the storage and processor tests: records, producing, polling the database."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters import ensure_topics, make_producer
from core.settings import Settings
from wire import (
    DeadLetterRecord,
    ReadingBatch,
    ReadingRecord,
    RejectReason,
    SourceKind,
    WireReading,
)

WAIT_S = 25.0
POLL_S = 0.1

# (kind, metrics, location) for each source kind.
KIND_METRICS: dict[SourceKind, tuple[list[str], str | None]] = {
    SourceKind.CITY: (["co2_ppm", "ch4_ppm", "wind_speed_m_s"], None),
    SourceKind.CEMS: (["co2_pct_vol", "flow_m3_h", "load_mw"], None),
    SourceKind.MINE: (["ch4_pct_vol", "co_ppm"], "T1"),
    SourceKind.LEAK: (["ch4_ppm", "wind_dir_deg"], None),
}
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def reading_record(
    kind: SourceKind,
    device_no: int,
    step: int,
    *,
    start: datetime = T0,
    flag: str = "N",
    received_delay_s: float = 1.0,
) -> ReadingRecord:
    """One message of ``device_no`` of ``kind`` at time step ``step`` (one reading a metric)."""
    metrics, location = KIND_METRICS[kind]
    ts = start + timedelta(seconds=10 * step)
    where = f"{kind.value}-net/site-{device_no % 2}/dev-{device_no}"
    return ReadingRecord(
        device_id=where,
        kind=kind,
        network=f"{kind.value}-net",
        site=f"site-{device_no % 2}",
        device=f"dev-{device_no}",
        location=location,
        mqtt_topic=f"ghg/v1/{kind.value}/{where}/data",
        received_at=ts + timedelta(seconds=received_delay_s),
        readings=[
            WireReading(ts=ts, metric=m, value=1.0 + step % 7 + i, flag=flag)
            for i, m in enumerate(metrics)
        ],
    )


def mixed_records(devices_per_kind: int, steps: int) -> list[ReadingRecord]:
    """Messages from every kind, ``devices_per_kind`` devices each, ``steps`` time steps."""
    return [
        reading_record(kind, d, s)
        for s in range(steps)
        for kind in SourceKind
        for d in range(devices_per_kind)
    ]


def dead_letter(n: int, reason: RejectReason = RejectReason.MALFORMED_JSON) -> DeadLetterRecord:
    """A bridge reject with payload unique to ``n``."""
    payload = b'{"ts": "2026-11-20T00:00:00Z", "metric": "co2_ppm", "value": ' + str(n).encode()
    return DeadLetterRecord(
        mqtt_topic=f"ghg/v1/city/net/site/dev-{n}/data",
        device_id=f"net/site/dev-{n}",
        reason=reason,
        detail="Expecting ',' delimiter",
        received_at=T0 + timedelta(seconds=n),
        payload_b64=base64.b64encode(payload).decode("ascii"),
    )


def as_batches(records: Sequence[ReadingRecord]) -> list[ReadingBatch]:
    """The messages in the columnar form the bridge produces and the writer stores."""
    return [ReadingBatch.from_record(r) for r in records]


def total_readings(records: Sequence[ReadingRecord]) -> int:
    """How many readings the messages carry."""
    return sum(len(r.readings) for r in records)


async def produce(
    settings: Settings,
    records: Sequence[ReadingRecord] = (),
    dead: Sequence[DeadLetterRecord] = (),
    raw: Sequence[tuple[str, bytes]] = (),
    *,
    record_format: int = 2,
) -> dict[TopicPartition, int]:
    """Produce readings (keyed by device), dead letters and raw (topic, value) pairs.

    Readings go in the bridge's format 2 (columnar batches), or as format-1 JSON records
    (what bridges before it produced) with ``record_format=1``.

    Returns:
        For each partition written, the offset after the last record produced to it.
    """
    topics = [settings.kafka.readings_topic, settings.kafka.deadletter_topic]
    await ensure_topics(settings.kafka, settings.kafka_bootstrap(), topics)
    producer = make_producer(settings.kafka, settings.kafka_bootstrap())
    await producer.start()
    try:
        futures = []
        for rec in records:
            futures.append(
                await producer.send(
                    settings.kafka.readings_topic,
                    rec.model_dump_json().encode()
                    if record_format == 1
                    else ReadingBatch.from_record(rec).encode(),
                    key=rec.device_id.encode(),
                )
            )
        for d in dead:
            futures.append(
                await producer.send(
                    settings.kafka.deadletter_topic,
                    d.model_dump_json().encode(),
                    key=(d.device_id or "").encode(),
                )
            )
        for topic, value in raw:
            futures.append(await producer.send(topic, value, key=b"garbage"))
        async with asyncio.timeout(WAIT_S):
            metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    after: dict[TopicPartition, int] = {}
    for meta in metas:
        tp = TopicPartition(meta.topic, meta.partition)
        after[tp] = max(after.get(tp, 0), meta.offset + 1)
    return after


async def fetch_val(dsn: str, sql: str, *args: Any) -> Any:
    """One value from a fresh connection (works while the processor holds its pool)."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    """Poll ``check`` until it is true; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for: {what}")
        await asyncio.sleep(POLL_S)


async def wait_for_count(dsn: str, table: str, expected: int, timeout_s: float = WAIT_S) -> None:
    """Wait until ``table`` holds ``expected`` rows (fails on timeout)."""

    async def check() -> bool:
        try:
            n = await fetch_val(dsn, f"SELECT count(*) FROM {table}")
        except (OSError, asyncpg.PostgresError):
            return False
        return bool(n >= expected)

    await wait_until(check, f"{expected} rows in {table}", timeout_s)


async def committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The group's committed offsets on both topics (partitions without a commit left out)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap(),
        group_id=settings.processor.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out: dict[TopicPartition, int] = {}
        for topic in (settings.kafka.readings_topic, settings.kafka.deadletter_topic):
            for p in range(settings.kafka.partitions):
                tp = TopicPartition(topic, p)
                async with asyncio.timeout(WAIT_S):
                    off = await consumer.committed(tp)
                if off is not None and off >= 0:
                    out[tp] = off
        return out
    finally:
        await consumer.stop()
