"""Benchmark of the storing processor from a real tansu broker into PostgreSQL: readings/s.

Run: python benchmarks/bench_processor.py [--records 20000] [--plain]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from bench_writer import make_values

from ghgwatch.embedded import start_tansu
from ghgwatch.settings import Settings
from ingest import ensure_topics, make_producer
from processors import Processor
from processors.storage import migrate

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "ghgw_bench_processor"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=20_000, help="Kafka records, 10 readings each")
    p.add_argument("--plain", action="store_true")
    args = p.parse_args()
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {DB}")
    dsn = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB
    with tempfile.TemporaryDirectory() as tmp:
        tansu = await start_tansu(Path(tmp), port=0)
        try:
            settings = Settings(
                kafka={"bootstrap": f"{tansu.host}:{tansu.port}", "partitions": 6},
                db={"url": dsn},
                metrics={"enabled": False},
                processor={"group_id": "bench", "batch_max": 2000, "session_timeout_ms": 6000},
            )
            await migrate(dsn, settings.db, timescale=False if args.plain else None)
            k = settings.kafka
            await ensure_topics(
                k, settings.kafka_bootstrap(), [k.readings_topic, k.deadletter_topic]
            )
            values = make_values(args.records, datetime(2026, 11, 1, tzinfo=UTC))
            producer = make_producer(k, settings.kafka_bootstrap())
            await producer.start()
            t0 = time.perf_counter()
            futs = [
                await producer.send(k.readings_topic, v.value, key=str(i % 500).encode())
                for i, v in enumerate(values)
            ]
            await asyncio.gather(*futs)
            await producer.stop()
            produce_s = time.perf_counter() - t0
            n = args.records * 10
            t0 = time.perf_counter()
            stats = await Processor(settings).run(max_readings=n, timeout_s=120)
            run_s = time.perf_counter() - t0
            assert stats.inserted == n, stats
            print(
                f"{'plain' if args.plain else 'timescale'}: produced {n} readings in "
                f"{produce_s:.1f} s; processor stored them in {run_s:.1f} s incl. start-up "
                f"= {n / run_s:,.0f} readings/s ({stats.batches} batches)"
            )
        finally:
            await tansu.stop()
    await admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
