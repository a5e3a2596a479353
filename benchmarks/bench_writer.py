"""Micro-benchmark of decode + ReadingStore.write: rows/s on the local PostgreSQL.

Run: python benchmarks/bench_writer.py [--plain] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from ghgwatch.settings import DbSettings
from ingest.schemas import ReadingRecord, SourceKind, WireReading
from processors.consumer import GC_GEN0_THRESHOLD
from processors.storage import KafkaValue, ReadingStore, decode_values, migrate

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "ghgw_bench_writer"
READINGS_PER_RECORD = 10
RECORDS_PER_BATCH = 2_000  # 20,000 readings: the default processor.batch_max records


def make_values(n_records: int, start: datetime, devices: int = 500) -> list[KafkaValue]:
    out = []
    metrics = ["ch4_pct_vol", "co_ppm", "air_velocity_m_s"]
    for i in range(n_records):
        dev = i % devices
        ts = start + timedelta(seconds=i // devices)
        rec = ReadingRecord(
            device_id=f"net/site{dev // 100}/s{dev}",
            kind=SourceKind.MINE,
            network="net",
            site=f"site{dev // 100}",
            device=f"s{dev}",
            location="T1",
            mqtt_topic=f"ghg/v1/mine/net/site{dev // 100}/s{dev}/data",
            received_at=ts + timedelta(milliseconds=300),
            readings=[
                WireReading(
                    ts=ts + timedelta(milliseconds=k),
                    metric=metrics[k % 3],
                    value=0.3 + k / 100,
                )
                for k in range(READINGS_PER_RECORD)
            ],
        )
        out.append(KafkaValue("readings", 0, i, None, rec.model_dump_json().encode(), 0))
    return out


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--plain", action="store_true")
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])  # as Processor.run does
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    dsn = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB
    cfg = DbSettings(url=dsn)
    await migrate(dsn, cfg, timescale=False if args.plain else None)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    batches = [make_values(RECORDS_PER_BATCH, start + timedelta(hours=h)) for h in range(4)]
    now = datetime.now(UTC)
    decode_s = write_s = 0.0
    rows = 0
    async with ReadingStore(dsn, cfg) as store:
        t_end = time.monotonic() + args.seconds
        i = 0
        while time.monotonic() < t_end:
            # fresh timestamps per round so every row is a real insert
            vals = batches[i % len(batches)]
            t0 = time.perf_counter()
            dec = decode_values(vals, readings_topic="readings", received_at=now)
            t1 = time.perf_counter()
            shift = timedelta(hours=4 * (i // len(batches)))
            recs = (
                [
                    r.model_copy(
                        update={
                            "readings": [
                                w.model_copy(update={"ts": w.ts + shift}) for w in r.readings
                            ]
                        }
                    )
                    for r in dec.readings
                ]
                if shift
                else dec.readings
            )
            t2 = time.perf_counter()
            res = await store.write(recs, dec.dead)
            t3 = time.perf_counter()
            assert res.inserted == len(recs) * READINGS_PER_RECORD, res
            decode_s += t1 - t0
            write_s += t3 - t2
            rows += res.inserted
            i += 1
        dup_t0 = time.perf_counter()
        res = await store.write(dec.readings, [])
        dup_s = time.perf_counter() - dup_t0
    mode = "plain" if args.plain else "timescale"
    print(
        f"{mode}: {rows} rows in {i} batches; decode {rows / decode_s:,.0f} rows/s, "
        f"write {rows / write_s:,.0f} rows/s, "
        f"decode+write {rows / (decode_s + write_s):,.0f} rows/s;"
        f" all-duplicate batch of {res.duplicates} in {dup_s * 1000:.0f} ms"
    )
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
