"""ReadingStore against a real PostgreSQL: exactly-once readings, exact device counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from proc_helpers import as_batches, dead_letter, mixed_records, reading_record, total_readings

from core.errors import StorageBackpressure
from core.settings import DbSettings, Settings
from processors import SchemaMissing
from processors.storage import DeadLetter, ReadingStore
from wire import RejectReason, SourceKind


async def test_same_batch_twice_is_stored_once_with_exact_device_counts(
    migrated: Settings,
) -> None:
    """A redelivered batch inserts nothing and leaves devices.readings_count unchanged."""
    records = mixed_records(devices_per_kind=3, steps=4)
    n = total_readings(records)
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        first = await store.write(as_batches(records), [])
        second = await store.write(as_batches(records), [])
    assert (first.inserted, first.duplicates) == (n, 0)
    assert (second.inserted, second.duplicates) == (0, n)
    assert len(first.latencies_s) == len(records)
    conn = await asyncpg.connect(migrated.db_url())
    try:
        assert await conn.fetchval("SELECT count(*) FROM readings") == n
        rows = await conn.fetch("SELECT device_id, readings_count, kind FROM devices")
        assert len(rows) == 12
        expected = {r.device_id: 0 for r in records}
        for r in records:
            expected[r.device_id] += len(r.readings)
        assert {r["device_id"]: r["readings_count"] for r in rows} == expected
        mine = await conn.fetchval("SELECT location FROM devices WHERE kind = 'mine' LIMIT 1")
        assert mine == "T1"
    finally:
        await conn.close()


async def test_partly_redelivered_batch_stores_only_the_new_readings(migrated: Settings) -> None:
    """A batch mixing stored and new readings (the fast COPY path fails on the key) inserts
    exactly the new ones, keeps the first stored values and counts only the new ones."""
    records = mixed_records(devices_per_kind=2, steps=6)
    old, new = records[: len(records) // 2], records[len(records) // 2 :]
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        first = await store.write(as_batches(old))
        mixed = await store.write(as_batches([*new, *old]))
    assert first.inserted == total_readings(old)
    assert (mixed.inserted, mixed.duplicates) == (total_readings(new), total_readings(old))
    conn = await asyncpg.connect(migrated.db_url())
    try:
        assert await conn.fetchval("SELECT count(*) FROM readings") == total_readings(records)
        counts = dict(await conn.fetch("SELECT device_id, readings_count FROM devices"))
    finally:
        await conn.close()
    expected = {r.device_id: 0 for r in records}
    for r in records:
        expected[r.device_id] += len(r.readings)
    assert counts == expected


async def test_late_and_out_of_order_readings_are_stored(migrated: Settings) -> None:
    """Readings older than stored ones, and a batch in reverse time order, are all kept."""
    kind = SourceKind.MINE
    newest = [reading_record(kind, 0, step) for step in range(10, 20)]
    late = [reading_record(kind, 0, step) for step in reversed(range(0, 10))]
    days_late = reading_record(kind, 0, 0, start=datetime(2026, 8, 1, tzinfo=UTC))
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        a = await store.write(as_batches(newest))
        b = await store.write(as_batches([*late, days_late]))
    assert a.inserted == total_readings(newest)
    assert b.inserted == total_readings(late) + len(days_late.readings)
    conn = await asyncpg.connect(migrated.db_url())
    try:
        row = await conn.fetchrow("SELECT readings_count, last_reading_ts, first_seen FROM devices")
        assert row["readings_count"] == a.inserted + b.inserted
        assert row["last_reading_ts"] == newest[-1].readings[0].ts
        assert row["first_seen"] == days_late.received_at
        assert await conn.fetchval("SELECT min(ts) FROM readings") == days_late.readings[0].ts
    finally:
        await conn.close()


async def test_duplicate_readings_inside_one_batch_count_once(migrated: Settings) -> None:
    """The same reading twice in one batch is stored once and counted once."""
    rec = reading_record(SourceKind.CITY, 1, 1)
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        result = await store.write(as_batches([rec, rec]))
    assert (result.inserted, result.duplicates) == (len(rec.readings), len(rec.readings))
    count = await _one(migrated, "SELECT readings_count FROM devices")
    assert count == len(rec.readings)


async def test_same_bad_bytes_on_same_topic_are_one_dead_letter_row(migrated: Settings) -> None:
    """Repeated dead letters merge into one row whose occurrences count every delivery."""
    d1, d2 = dead_letter(1), dead_letter(2, RejectReason.OUT_OF_RANGE)
    later = d1.model_copy(update={"received_at": d1.received_at + timedelta(hours=1)})
    garbage = DeadLetter("kafka:x", None, "undecodable_record", "p0 o1", b"\xff", d1.received_at)
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        first = await store.write([], [d1, d2, garbage])
        second = await store.write([], [d1, later])
    assert (first.dead_letters, second.dead_letters) == (3, 2)
    conn = await asyncpg.connect(migrated.db_url())
    try:
        rows = await conn.fetch(
            "SELECT mqtt_topic, reason, occurrences, received_at, last_received_at, payload"
            " FROM dead_letters ORDER BY id"
        )
    finally:
        await conn.close()
    assert len(rows) == 3
    by_topic = {r["mqtt_topic"]: r for r in rows}
    r1 = by_topic[d1.mqtt_topic]
    assert r1["occurrences"] == 3
    assert (r1["received_at"], r1["last_received_at"]) == (d1.received_at, later.received_at)
    assert bytes(r1["payload"]) == d1.payload
    assert by_topic["kafka:x"]["reason"] == "undecodable_record"
    assert by_topic[d2.mqtt_topic]["reason"] == "out_of_range"


async def test_missing_schema_is_fatal(settings: Settings) -> None:
    """Starting a store on a database without migrations raises SchemaMissing."""
    store = ReadingStore(settings.db_url(), settings.db)
    with pytest.raises(SchemaMissing, match="ghgwatch db migrate"):
        await store.start()


async def test_unreachable_database_is_backpressure(pg_url: str) -> None:
    """A database nobody listens for maps to StorageBackpressure with the cause chained."""
    dsn = "postgresql://postgres@127.0.0.1:1/nothing"
    store = ReadingStore(dsn, DbSettings(url=dsn), retry_after_s=0.5)
    with pytest.raises(StorageBackpressure) as info:
        await store.start()
    assert info.value.retry_after == 0.5
    assert isinstance(info.value.__cause__, OSError)


async def test_terminated_connections_are_backpressure_then_recover(
    migrated: Settings, pg_admin_url: str
) -> None:
    """Backends killed under the pool: the next write may push back, a later one succeeds."""
    records = mixed_records(devices_per_kind=1, steps=2)
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        await store.write(as_batches(records[:4]))
        dbname = migrated.db_url().rsplit("/", 1)[1]
        await _terminate(pg_admin_url, dbname)
        outcomes = []
        for _ in range(3):
            try:
                await store.write(as_batches(records[4:]))
                outcomes.append("ok")
                break
            except StorageBackpressure:
                outcomes.append("backpressure")
        assert outcomes[-1] == "ok", outcomes
    assert await _one(migrated, "SELECT count(*) FROM readings") == total_readings(records)


async def _terminate(admin_url: str, dbname: str) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            dbname,
        )
    finally:
        await admin.close()


async def _one(settings: Settings, sql: str) -> object:
    conn = await asyncpg.connect(settings.db_url())
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_a_stuck_database_times_out_as_backpressure_then_recovers(
    migrated: Settings,
) -> None:
    """A table locked by someone else: the write times out (backpressure), later succeeds."""
    cfg = migrated.db.model_copy(update={"command_timeout_s": 0.5})
    records = mixed_records(devices_per_kind=1, steps=2)
    blocker = await asyncpg.connect(migrated.db_url())
    try:
        async with ReadingStore(migrated.db_url(), cfg) as store:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
            try:
                with pytest.raises(StorageBackpressure):
                    await store.write(as_batches(records))
            finally:
                await tx.rollback()
            result = await store.write(as_batches(records))
    finally:
        await blocker.close()
    assert result.inserted == total_readings(records)
    assert await _one(migrated, "SELECT sum(readings_count) FROM devices") == result.inserted
