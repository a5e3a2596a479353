"""Benchmark of the quarterly report at region scale: its cost grows with sources x days.

Region scale (MISSION.md): 300 CEMS units with hourly aggregates (0.66 M rows) and 50,000
mine sensors with daily aggregates (4.6 M rows) over one quarter, COPYed straight into the
aggregate tables; then the report (daily roll-up of the CEMS hours, every section builder,
the warnings) is timed. Target: under 60 s on this machine.

In the same run, a 10-unit subset also has minute readings in ``readings`` (1.3 M rows):
the same completeness figures (valid and data hours per unit, HJ 75's 45 valid minutes per
hour) are computed once straight from those raw rows and once the report's way (hourly
aggregate -> daily -> figures); both times, their ratio and the equality of the figures are
printed.

Run: python benchmarks/bench_report.py [--sensors 50000] [--units 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from core.settings import DbSettings, Settings
from processors.storage import migrate
from reports import SECTION_BUILDERS, Quarter, SectionContext, build_report
from reports.aggregates import refresh_daily
from reports.completeness import device_coverage

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "ghgw_bench_report"
TZ = "Asia/Shanghai"
Q = Quarter(2026, 3)
SUBSET = 10
SENSORS_PER_MINE = 100
CHUNK = 200_000
_HOURLY = ("bucket", "device_id", "metric", "avg", "min", "max", "count", "n_all")
_DAILY = ("day", "device_id", "metric", "n_valid", "n_all", "sum_valid", "min", "max",
          "data_hours", "valid_hours")  # fmt: skip

console = Console()


def _unit(i: int) -> str:
    return f"plant-{i // 4:02d}/site-{i // 4:02d}/unit-{i % 4}"


def _sensor(i: int) -> str:
    return f"coal-{i // 10_000}/mine-{i // SENSORS_PER_MINE:03d}/s-{i:05d}"


async def _copy(conn: asyncpg.Connection, table: str, cols: tuple[str, ...],
                rows: Iterator[tuple[Any, ...]]) -> int:  # fmt: skip
    n, chunk = 0, []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= CHUNK:
            await conn.copy_records_to_table(table, records=chunk, columns=list(cols))
            n, chunk = n + len(chunk), []
    if chunk:
        await conn.copy_records_to_table(table, records=chunk, columns=list(cols))
        n += len(chunk)
    return n


def _minute_counts(rng: np.random.Generator, hours: int) -> np.ndarray:
    """Valid minutes per hour of one unit: mostly 60, some short hours, a few outages."""
    counts = np.full(hours, 60, np.int64)
    short = rng.random(hours) < 0.03
    counts[short] = rng.integers(20, 45, short.sum())
    out = rng.integers(0, hours - 48)
    counts[out : out + rng.integers(0, 48)] = 0
    return counts


async def main(units: int, sensors: int) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{DB}"')
    await admin.close()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{DB}"
    await migrate(url, DbSettings(), timescale=False)
    settings = Settings(db={"url": url}, reports={"pdf": False})
    conn = await asyncpg.connect(url, command_timeout=3600)
    rng = np.random.default_rng(1)
    start, n_hours = Q.start(TZ), Q.hours(TZ)
    days = [date(2026, 7, 1) + timedelta(days=d) for d in range(92)]
    hours = [start + timedelta(hours=h) for h in range(n_hours)]
    first = start - timedelta(days=30)
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console) as progress:  # fmt: skip
            task = progress.add_task("devices", total=None)
            ids = [(_unit(i), "cems") for i in range(units)]
            ids += [(_sensor(i), "mine") for i in range(sensors)]
            await conn.copy_records_to_table(
                "devices",
                records=[(d, k, *d.split("/"), first, first) for d, k in ids],
                columns=["device_id", "kind", "network", "site", "device", "first_seen",
                         "last_seen"],
            )  # fmt: skip
            counts = {i: _minute_counts(rng, n_hours) for i in range(units)}
            progress.update(task, description=f"hourly aggregates: {units} units")
            t0 = time.perf_counter()
            n_hourly = await _copy(conn, "bench_cems_1h", _HOURLY, (
                (hours[h], _unit(i), "co2_pct_vol", 12.0, 11.5, 12.5, int(c), int(c))
                for i in range(units) for h, c in enumerate(counts[i].tolist())
            )) if await _bench_table(conn, "bench_cems_1h") else 0  # fmt: skip
            await _bench_table(conn, "bench_cems10_1h")
            subset_ids = [_unit(i) for i in range(SUBSET)]
            await conn.execute(
                "INSERT INTO bench_cems10_1h SELECT * FROM bench_cems_1h"
                " WHERE device_id = ANY ($1)",
                subset_ids,
            )
            progress.update(task, description=f"daily aggregates: {sensors:,} mine sensors")
            # one mine in ten loses 30 % of its sensors after day 40, the others 1 %
            mine_of = np.arange(sensors) // SENSORS_PER_MINE
            silent = rng.random(sensors) < np.where(mine_of % 10 == 0, 0.3, 0.01)
            n_daily = await _copy(conn, "readings_1d", _DAILY, (
                (d, _sensor(i), "ch4_pct_vol", 2160 if not silent[i] or k < 40 else 0,
                 2160 if not silent[i] or k < 40 else 0, 648.0, 0.2, 0.5,
                 24 if not silent[i] or k < 40 else 0, 24 if not silent[i] or k < 40 else 0)
                for i in range(sensors) for k, d in enumerate(days)
            ))  # fmt: skip
            progress.update(task, description=f"minute readings: {SUBSET} units")
            n_raw = await _copy(conn, "readings", ("ts", "device_id", "metric", "value", "flag",
                                                   "received_at"), (
                (hours[h] + timedelta(minutes=m), _unit(i), "co2_pct_vol", 12.0, "N", hours[h])
                for i in range(SUBSET) for h, c in enumerate(counts[i].tolist())
                for m in range(c)
            ))  # fmt: skip
            load_s = time.perf_counter() - t0
            await conn.execute("ANALYZE")
            progress.update(task, description="region-scale quarterly report")
            t0 = time.perf_counter()
            need = dict(settings.reports.min_valid_readings_per_hour)
            await refresh_daily(conn, start, Q.end(TZ), TZ, need, source="bench_cems_1h")

            def say(msg: str) -> None:
                progress.update(task, description=msg)

            report = await build_report(
                conn, settings, Q, builders=SECTION_BUILDERS, refresh=False, progress=say
            )
            report_s = time.perf_counter() - t0
            progress.update(task, description="10 units from the raw minute readings")
            t0 = time.perf_counter()
            raw = await conn.fetch(
                """WITH h AS (
                       SELECT device_id, date_trunc('hour', ts) AS hour,
                              count(*) FILTER (WHERE flag = 'N') AS n_valid
                       FROM readings WHERE ts >= $1 AND ts < $2 AND metric = 'co2_pct_vol'
                       GROUP BY 1, 2)
                   SELECT device_id, count(*) FILTER (WHERE n_valid >= 45) AS valid_h,
                          count(*) AS data_h
                   FROM h GROUP BY 1""",
                start, Q.end(TZ),
            )  # fmt: skip
            raw_s = time.perf_counter() - t0
            progress.update(task, description="10 units the report's way")
            t0 = time.perf_counter()
            await refresh_daily(conn, start, Q.end(TZ), TZ, need, source="bench_cems10_1h")
            ctx = SectionContext(conn=conn, settings=settings, quarter=Q, tz=TZ)
            subset = set(subset_ids)
            cov = [c for c in await device_coverage(ctx, ("cems",)) if c.device_id in subset]
            agg_s = time.perf_counter() - t0
    finally:
        await conn.close()
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        await admin.close()
    raw_fig = {r["device_id"]: (float(r["valid_h"]), float(r["data_h"])) for r in raw}
    agg_fig = {c.device_id: (c.valid_h, c.data_h) for c in cov}
    same = raw_fig == agg_fig
    levels = {lvl: sum(1 for w in report.warnings if w.level == lvl)
              for lvl in ("red", "orange", "yellow", "green")}  # fmt: skip
    console.print(f"data: {n_hourly:,} CEMS hourly rows, {n_daily:,} mine daily rows,"
                  f" {n_raw:,} raw minute readings (loaded in {load_s:.1f} s)")  # fmt: skip
    console.print(f"region-scale report ({units} units, {sensors:,} sensors, "
                  f"{len(report.warnings):,} sources, levels {levels}): {report_s:.2f} s"
                  f" (target < 60 s: {'met' if report_s < 60 else 'NOT met'})")  # fmt: skip
    console.print(f"{SUBSET} units from raw minute readings: {raw_s:.3f} s; the report's way"
                  f" (hourly -> daily -> figures): {agg_s:.3f} s; ratio {raw_s / agg_s:.1f}x;"
                  f" figures equal: {same}")  # fmt: skip
    if not same:
        raise SystemExit("raw and aggregate figures differ")


async def _bench_table(conn: asyncpg.Connection, name: str) -> bool:
    """An hourly table shaped like readings_1h (the benchmark writes hours straight in)."""
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} (bucket timestamptz, device_id text, metric text,"
        " avg float8, min float8, max float8, count bigint, n_all bigint)"
    )
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--sensors", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(main(args.units, args.sensors))
