"""Benchmark of the storing processor from a real tansu broker into PostgreSQL: readings/s.

The same readings are stored twice by the same ``Processor``, each time into a fresh
database from its own topic: once as the bridge produces them (format 2, columnar batches)
and once as format-1 JSON records (what bridges produced before, still read for upgrades),
the baseline of the ratio printed.

Run: python benchmarks/bench_processor.py [--records 20000] [--readings-per-record 100] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from bench_writer import make_records

from adapters import ensure_topics, make_producer
from core.settings import Settings
from ghgwatch.embedded import start_tansu
from processors import Processor
from processors.storage import migrate
from wire import ReadingBatch

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "ghgw_bench_processor"


async def _store(
    bootstrap: str, values: list[bytes], readings: int, fmt: int, plain: bool
) -> float:
    """Produce ``values`` to a fresh topic, store them with a Processor; readings/s."""
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    dsn = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB
    try:
        settings = Settings(
            kafka={
                "bootstrap": bootstrap,
                "partitions": 6,
                "readings_topic": f"bench-readings-{fmt}",
                "deadletter_topic": f"bench-deadletter-{fmt}",
            },
            db={"url": dsn},
            metrics={"enabled": False},
            processor={"group_id": f"bench-{fmt}", "session_timeout_ms": 6000},
        )
        await migrate(dsn, settings.db, timescale=False if plain else None)
        k = settings.kafka
        await ensure_topics(k, settings.kafka_bootstrap(), [k.readings_topic, k.deadletter_topic])
        producer = make_producer(k, settings.kafka_bootstrap())
        await producer.start()
        futs = [
            await producer.send(k.readings_topic, v, key=str(i % 500).encode())
            for i, v in enumerate(values)
        ]
        await asyncio.gather(*futs)
        await producer.stop()
        t0, cpu0 = time.perf_counter(), time.process_time()
        stats = await Processor(settings).run(max_readings=readings, timeout_s=300)
        run_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        assert stats.inserted == readings, stats
        cpu_us = cpu_s / readings * 1e6
        print(
            f"  format {fmt}: {readings:,} readings stored in {run_s:.1f} s incl. start-up "
            f"= {readings / run_s:,.0f} readings/s ({stats.batches} batches); processor CPU "
            f"{cpu_us:.2f} us/reading"
        )
        return readings / run_s, cpu_us
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        await admin.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=20_000, help="Kafka records")
    p.add_argument("--readings-per-record", type=int, default=100)
    p.add_argument("--plain", action="store_true", help="no TimescaleDB even if available")
    args = p.parse_args()
    records = make_records(
        args.records, args.readings_per_record, datetime(2026, 11, 1, tzinfo=UTC)
    )
    readings = args.records * args.readings_per_record
    v2 = [ReadingBatch.from_record(r).encode() for r in records]
    v1 = [r.model_dump_json().encode() for r in records]
    print(f"processor benchmark: {args.records:,} records of {args.readings_per_record} readings")
    with tempfile.TemporaryDirectory() as tmp:
        tansu = await start_tansu(Path(tmp), port=0)
        try:
            bootstrap = f"{tansu.host}:{tansu.port}"
            ours, ours_cpu = await _store(bootstrap, v2, readings, 2, args.plain)
            base, base_cpu = await _store(bootstrap, v1, readings, 1, args.plain)
        finally:
            await tansu.stop()
    print(
        f"  format 2 vs format 1: {ours / base:.2f}x the readings/s (PostgreSQL's insert bounds"
        f" both), {base_cpu / ours_cpu:.1f}x less processor CPU per reading"
    )


if __name__ == "__main__":
    asyncio.run(main())
