"""Micro-benchmark of decode + store on the local PostgreSQL, against a per-row baseline.

ghgwatch: format-2 Kafka values -> ``decode_values`` -> ``ReadingStore.write`` (COPY data laid
out with numpy, device registry upsert, one transaction).
baseline: the same readings as format-1 JSON -> pydantic ``ReadingRecord`` per message -> one
Python tuple per reading -> asyncpg ``copy_records_to_table`` (how the writer worked before),
into a twin table in the same database, in the same run.

Run: python benchmarks/bench_writer.py [--plain] [--seconds 10] [--readings-per-record 100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from core.settings import DbSettings
from processors.consumer import GC_GEN0_THRESHOLD
from processors.storage import KafkaValue, ReadingStore, decode_values, migrate
from wire import ReadingBatch, ReadingRecord, SourceKind, WireReading, epoch_us

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "ghgw_bench_writer"
RECORDS_PER_BATCH = 200
_COLUMNS = ("ts", "device_id", "metric", "value", "flag", "received_at")


def make_records(n_records: int, per_record: int, start: datetime) -> list[ReadingRecord]:
    """Mine-sensor messages of ``per_record`` readings, 500 devices, 3 metrics."""
    out = []
    metrics = ["ch4_pct_vol", "co_ppm", "air_velocity_m_s"]
    devices = 500
    for i in range(n_records):
        dev = i % devices
        ts = start + timedelta(seconds=i // devices)
        out.append(
            ReadingRecord(
                device_id=f"ordos-coal/site{dev // 100}/sensor-{dev:04d}",
                kind=SourceKind.MINE,
                network="ordos-coal",
                site=f"site{dev // 100}",
                device=f"sensor-{dev:04d}",
                location="T1",
                mqtt_topic=f"ghg/v1/mine/ordos-coal/site{dev // 100}/sensor-{dev:04d}/data",
                received_at=ts + timedelta(milliseconds=300),
                readings=[
                    WireReading(
                        ts=ts + timedelta(microseconds=k * 1000),
                        metric=metrics[k % 3],
                        value=0.3 + k / 100,
                    )
                    for k in range(per_record)
                ],
            )
        )
    return out


def make_values(n_records: int, start: datetime, per_record: int = 10) -> list[KafkaValue]:
    """Format-2 Kafka values, as the bridge produces them."""
    return [
        KafkaValue("readings", 0, i, None, ReadingBatch.from_record(r).encode(), 0)
        for i, r in enumerate(make_records(n_records, per_record, start))
    ]


async def _baseline_write(conn: asyncpg.Connection, values: list[bytes], shift: timedelta) -> int:
    rows = []
    for raw in values:
        rec = ReadingRecord.model_validate_json(raw)
        for r in rec.readings:
            rows.append((r.ts + shift, rec.device_id, r.metric, r.value, r.flag, rec.received_at))
    async with conn.transaction():
        await conn.copy_records_to_table("baseline_readings", records=rows, columns=_COLUMNS)
    return len(rows)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--plain", action="store_true", help="no TimescaleDB even if available")
    p.add_argument("--seconds", type=float, default=10.0, help="per system")
    p.add_argument("--readings-per-record", type=int, default=100)
    args = p.parse_args()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])  # as Processor.run does
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    dsn = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB
    cfg = DbSettings(url=dsn)
    report = await migrate(dsn, cfg, timescale=False if args.plain else None)
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE baseline_readings (LIKE readings INCLUDING ALL)")
    if report.timescale:
        await conn.execute("SELECT create_hypertable('baseline_readings', 'ts')")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    per = args.readings_per_record
    records = make_records(RECORDS_PER_BATCH, per, start)
    v2 = [KafkaValue("readings", 0, i, None, ReadingBatch.from_record(r).encode(), 0)
          for i, r in enumerate(records)]  # fmt: skip
    v1 = [r.model_dump_json().encode() for r in records]
    span = timedelta(seconds=RECORDS_PER_BATCH // 500 + 1)  # the time one round covers

    now = datetime.now(UTC)
    ours = {"rows": 0, "decode": 0.0, "write": 0.0}
    async with ReadingStore(dsn, cfg) as store:
        t_end, i = time.monotonic() + args.seconds, 0
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            dec = decode_values(v2, readings_topic="readings", received_at=now)
            shift = epoch_us(start + span * i) - epoch_us(start)
            batches = [dataclasses.replace(b, ts_us=b.ts_us + shift) for b in dec.readings]
            t1 = time.perf_counter()
            res = await store.write(batches, dec.dead)
            t2 = time.perf_counter()
            assert res.inserted == RECORDS_PER_BATCH * per, res
            ours["rows"] += res.inserted
            ours["decode"] += t1 - t0
            ours["write"] += t2 - t1
            i += 1
    base_rows, base_s = 0, 0.0
    t_end, i = time.monotonic() + args.seconds, 0
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        base_rows += await _baseline_write(conn, v1, span * i)
        base_s += time.perf_counter() - t0
        i += 1
    await conn.close()
    mode = "timescale" if report.timescale else "plain"
    ours_rate = ours["rows"] / (ours["decode"] + ours["write"])
    base_rate = base_rows / base_s
    print(f"writer benchmark ({mode}, {per} readings per record, {RECORDS_PER_BATCH} records"
          " per write)")  # fmt: skip
    print(
        f"  ghgwatch: {ours['rows']:,} rows; decode {ours['rows'] / ours['decode']:,.0f} rows/s,"
        f" write {ours['rows'] / ours['write']:,.0f} rows/s, together {ours_rate:,.0f} rows/s"
    )
    print(f"  baseline (pydantic per message, tuple per row): {base_rows:,} rows, "
          f"{base_rate:,.0f} rows/s")  # fmt: skip
    print(f"  ratio: {ours_rate / base_rate:.2f}x")
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
