"""Benchmark of the quarterly report at region scale: its cost grows with sources x hours.

Region scale (MISSION.md), 2026Q3:

- 300 CEMS units: their hourly derived series as the detection engine stores them
  (``co2_mass_t_h_1h``, ``valid_minutes_1h``, ``load_mw_1h``, ``site_pressure_minutes_1h``)
  from 1 January 2025 (last year's months give the seasonal shape; the 2,160 h look-back
  before this year falls inside it) to the quarter end, COPYed into ``derived``, with plants,
  regions, budgets, targets and benchmark classes configured, so that the plants and regions
  sections do their full work; and their hourly reading aggregates for the quarter (0.66 M
  rows) for the completeness section;
- 50,000 mine sensors in 500 mines: daily aggregates (4.6 M rows).

The whole report (every section builder, the warnings) is timed. Target: under 60 s.

In a second database, 10 units have minute readings of the CEMS channels for the quarter
in ``readings`` (about 9 M rows). The real detection engine turns them into hourly derived
rows, and the report's CEMS sections are timed on those rows; separately the quarter's
tonnes and gross intensity are computed straight from the raw minute rows (HJ 75 per
minute, HJ 76 valid hours, HJ 75-2017 substitution). Both times, their ratio and the
largest relative difference of the figures are printed.

Run: python benchmarks/bench_report.py [--sensors 50000] [--units 300] [--subset 10]
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import asyncpg
import numpy as np
import report_cems as rc

from core.settings import DbSettings, Settings
from processors.storage import migrate
from reports import SECTION_BUILDERS, Quarter, SectionContext, build_report
from reports.aggregates import refresh_daily
from reports.model import Section, SectionBuilder
from reports.plants import analyse, plants_section, regions_section

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "ghgw_bench_report"
DB_RAW = "ghgw_bench_report_raw"
TZ = "Asia/Shanghai"
Q = Quarter(2026, 3)
SENSORS_PER_MINE = 100
CHUNK = 200_000
TARGET_S = 60.0
_HOURLY = ("bucket", "device_id", "metric", "avg", "min", "max", "count", "n_all")
_DAILY = ("day", "device_id", "metric", "n_valid", "n_all", "sum_valid", "min", "max",
          "data_hours", "valid_hours")  # fmt: skip
_DERIVED_KEYS = (
    "ALTER TABLE derived ADD PRIMARY KEY (device_id, series, ts)",
    "CREATE INDEX IF NOT EXISTS derived_series_ts_idx ON derived (series, ts DESC)",
)
_READINGS_KEY = "ALTER TABLE readings ADD PRIMARY KEY (device_id, metric, ts)"

T_START = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f} s] {msg}", file=sys.stderr, flush=True)


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


async def _fresh_db(name: str) -> str:
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url, DbSettings(), timescale=False)
    return url


async def _drop_db(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _without_keys(conn: asyncpg.Connection, table: str) -> None:
    """Drop a table's primary key and secondary indexes before a bulk COPY (re-added after)."""
    await conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_pkey")
    for r in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE tablename = $1", table
    ):  # fmt: skip
        await conn.execute(f'DROP INDEX IF EXISTS "{r[0]}"')


def _timed(builder: SectionBuilder, times: dict[str, float]) -> SectionBuilder:
    async def run(ctx: SectionContext) -> Section:
        t0 = time.perf_counter()
        try:
            return await builder(ctx)
        finally:
            times[builder.__name__] = time.perf_counter() - t0

    run.__name__ = builder.__name__
    return run


def _failed(sections: list[Section]) -> list[str]:
    return [s.key for s in sections if s.title_en.endswith("(failed)")]


async def region(url: str, units: int, sensors: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    conn = await asyncpg.connect(url, command_timeout=3600)
    try:
        q_start, q_end, n_q = Q.start(TZ), Q.end(TZ), Q.hours(TZ)
        first = q_start - timedelta(days=30)
        ids = [(rc.unit_id(i), "cems") for i in range(units)]
        ids += [(_sensor(i), "mine") for i in range(sensors)]
        await conn.copy_records_to_table(
            "devices",
            records=[(d, k, *d.split("/"), first, first) for d, k in ids],
            columns=["device_id", "kind", "network", "site", "device", "first_seen",
                     "last_seen"],
        )  # fmt: skip

        # CEMS unit-hours into derived: 1 Jan last year to the quarter end
        d0 = rc.report_start(Q, TZ)
        h0 = int(d0.timestamp()) // 3600
        n = int(q_end.timestamp()) // 3600 - h0
        q3_from = int(q_start.timestamp()) // 3600 - h0
        y_from = int(Q.year_start(TZ).timestamp()) // 3600 - h0
        y2025 = [0.0] * units
        q_minutes: list[np.ndarray] = []
        n_derived = [0]

        async def blocks() -> AsyncIterator[bytes]:
            for i in range(units):
                u = rc.region_hours(rng, i, h0, n, q3_from)
                y2025[i] = float(u.rate[:y_from].sum())
                q_minutes.append(np.where(u.stored, u.valid_minutes, 0.0)[q3_from:])
                n_derived[0] += 4 * int(u.stored.sum())
                yield rc.region_blocks(rc.unit_id(i), h0, u)
                if (i + 1) % 50 == 0:
                    say(f"derived: {i + 1}/{units} units, {n_derived[0]:,} rows")

        say(f"derived: {units} units x {n:,} h x 4 series ({d0.date()} to {q_end.date()})")
        t0 = time.perf_counter()
        await _without_keys(conn, "derived")
        await rc.copy_blocks(conn, "derived", rc.DERIVED_COLS, blocks())
        say("derived: primary key and (series, ts) index")
        for stmt in _DERIVED_KEYS:
            await conn.execute(stmt)
        derived_s = time.perf_counter() - t0

        say(f"hourly reading aggregates: {units} units")
        t0 = time.perf_counter()
        hours = [q_start + timedelta(hours=h) for h in range(n_q)]
        n_hourly = await _copy(conn, "bench_cems_1h", _HOURLY, (
            (hours[h], rc.unit_id(i), "co2_pct_vol", 12.0, 11.5, 12.5, int(c), int(c))
            for i in range(units) for h, c in enumerate(q_minutes[i].tolist()) if c
        )) if await _bench_table(conn, "bench_cems_1h") else 0  # fmt: skip

        say(f"daily aggregates: {sensors:,} mine sensors")
        days = [date(2026, 7, 1) + timedelta(days=d) for d in range(92)]
        # one mine in ten loses 30 % of its sensors after day 40, the others 1 %
        mine_of = np.arange(sensors) // SENSORS_PER_MINE
        silent = rng.random(sensors) < np.where(mine_of % 10 == 0, 0.3, 0.01)
        n_daily = await _copy(conn, "readings_1d", _DAILY, (
            (d, _sensor(i), "ch4_pct_vol", 2160 if not silent[i] or k < 40 else 0,
             2160 if not silent[i] or k < 40 else 0, 648.0, 0.2, 0.5,
             24 if not silent[i] or k < 40 else 0, 24 if not silent[i] or k < 40 else 0)
            for i in range(sensors) for k, d in enumerate(days)
        ))  # fmt: skip
        agg_s = time.perf_counter() - t0
        say("ANALYZE")
        await conn.execute("ANALYZE")

        cfg = rc.region_settings(units, y2025, rng)
        settings = Settings(db={"url": url}, reports={"pdf": False}, **cfg)
        say("region-scale quarterly report")
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        need = dict(settings.reports.min_valid_readings_per_hour)
        await refresh_daily(conn, q_start, q_end, TZ, need, source="bench_cems_1h")
        refresh_s = time.perf_counter() - t0
        report = await build_report(
            conn, settings, Q, builders=[_timed(b, times) for b in SECTION_BUILDERS],
            refresh=False, progress=lambda m: say(f"  report: {m}"),
        )  # fmt: skip
        report_s = time.perf_counter() - t0
    finally:
        await conn.close()
    failed = _failed(report.sections)
    if failed:
        raise SystemExit(f"report sections failed: {failed}")
    plants = next(s for s in report.sections if s.key == "plants")
    regions = next(s for s in report.sections if s.key == "regions")
    by_type: dict[str, int] = {}
    for w in report.warnings:
        by_type[w.source_type] = by_type.get(w.source_type, 0) + 1
    return {
        "n_derived": n_derived[0], "derived_s": derived_s, "n_hourly": n_hourly,
        "n_daily": n_daily, "agg_s": agg_s, "refresh_s": refresh_s, "report_s": report_s,
        "times": times, "warnings": report.warnings, "by_type": by_type,
        "n_units": len(plants.data["units"]), "n_plants": len(plants.data["plants"]),
        "n_regions": len(regions.data["regions"]),
        "levels": {lvl: sum(1 for w in report.warnings if w.level == lvl)
                   for lvl in ("red", "orange", "yellow", "green")},
    }  # fmt: skip


async def subset(url: str, n_units: int) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    q_start = Q.start(TZ)
    minutes = Q.hours(TZ) * 60 + 2  # two minutes after the quarter close its last hour
    t0_s = int(q_start.timestamp())
    say(f"minute readings: simulating {n_units} units x {minutes:,} minutes")
    units = [rc.subset_minutes(rng, k, minutes) for k in range(n_units)]
    settings = Settings(db={"url": url}, reports={"pdf": False}, **rc.subset_settings(units))
    devices = [u.device for u in units]
    conn = await asyncpg.connect(url, command_timeout=3600)
    try:
        say("minute readings: COPY into readings")
        t0 = time.perf_counter()
        await _without_keys(conn, "readings")
        await rc.copy_blocks(conn, "readings", rc.READING_COLS, rc.reading_blocks(units, t0_s))
        say("minute readings: primary key")
        await conn.execute(_READINGS_KEY)
        n_raw = int(await conn.fetchval("SELECT count(*) FROM readings"))
        load_s = time.perf_counter() - t0

        say("detection engine over the minute readings")
        t0 = time.perf_counter()
        rows, n_in = rc.run_engine(settings, units, t0_s, say)
        engine_s = time.perf_counter() - t0

        async def blocks() -> AsyncIterator[bytes]:
            for dev, ser, ts, value, valid in rows:
                yield rc.derived_block(ts, dev, ser, value, valid)

        await rc.copy_blocks(conn, "derived", rc.DERIVED_COLS, blocks())
        n_derived = sum(r[2].size for r in rows)
        n_hourly = sum(r[2].size for r in rows if r[1].endswith("_1h"))
        await conn.execute("ANALYZE")

        say(f"{n_units} units: the report's CEMS sections from the engine's hourly rows")
        t0 = time.perf_counter()
        ctx = SectionContext(conn=conn, settings=settings, quarter=Q, tz=TZ)
        await plants_section(ctx)
        await regions_section(ctx)
        report_s = time.perf_counter() - t0
        analysis = await analyse(ctx)  # cached on ctx: the unrounded figures

        say(f"{n_units} units: the same figures from the raw minute rows")
        t0 = time.perf_counter()
        raw = await rc.raw_figures(conn, settings, Q, TZ, devices)
        raw_s = time.perf_counter() - t0
    finally:
        await conn.close()
    rep = {u.device_id: u for u in analysis.units}
    rel: dict[str, float] = {}
    hours_equal = True
    for dev in devices:
        a, b = rep[dev], raw[dev]
        hours_equal &= (a.valid_h, a.substituted_h) == (b.valid_h, b.substituted_h)
        for key in ("quarter_t", "gross_g_kwh"):
            x, y = getattr(a, key), getattr(b, key)
            d = float("inf") if x is None or y is None else abs(x - y) / abs(y)
            rel[key] = max(rel.get(key, 0.0), d)
    return {
        "n_raw": n_raw, "load_s": load_s, "n_in": n_in, "engine_s": engine_s,
        "n_derived": n_derived, "n_hourly": n_hourly, "report_s": report_s, "raw_s": raw_s,
        "rel": rel, "hours_equal": hours_equal,
        "quarter_t": sum(raw[d].quarter_t or 0.0 for d in devices),
        "sub_h": sum(raw[d].substituted_h for d in devices),
    }  # fmt: skip


async def main(units: int, sensors: int, n_subset: int) -> None:
    try:
        url = await _fresh_db(DB)
        r = await region(url, units, sensors)
        await _drop_db(DB)
        url = await _fresh_db(DB_RAW)
        s = await subset(url, n_subset)
    finally:
        await _drop_db(DB)
        await _drop_db(DB_RAW)
    t = r["times"]
    cems_s = t.get("plants_section", 0.0) + t.get("regions_section", 0.0)
    print(f"data: {r['n_derived']:,} CEMS derived unit-hour rows (4 series, 2025-01-01 to"
          f" {Q.end(TZ).date()}, COPY + indexes {r['derived_s']:.1f} s),"
          f" {r['n_hourly']:,} CEMS hourly aggregate rows, {r['n_daily']:,} mine daily rows"
          f" ({r['agg_s']:.1f} s)")  # fmt: skip
    print(f"region-scale report {Q} ({units} units, {sensors:,} sensors; {r['n_units']} units,"
          f" {r['n_plants']} plants, {r['n_regions']} regions accounted;"
          f" {len(r['warnings']):,} sources {r['by_type']}, levels {r['levels']}):"
          f" {r['report_s']:.2f} s (target < {TARGET_S:.0f} s:"
          f" {'met' if r['report_s'] < TARGET_S else 'NOT met'})")  # fmt: skip
    print(f"  of which: CEMS hours to days {r['refresh_s']:.2f} s, plants + regions"
          f" {cems_s:.2f} s, " + ", ".join(
              f"{k.removesuffix('_section')} {v:.2f} s" for k, v in t.items()
              if k not in ("plants_section", "regions_section")))  # fmt: skip
    print(f"{n_subset} units, {s['n_raw']:,} raw minute readings (COPY + key {s['load_s']:.1f} s);"
          f" detection engine {s['n_in']:,} readings -> {s['n_derived']:,} derived rows"
          f" ({s['n_hourly']:,} hourly) in {s['engine_s']:.1f} s")  # fmt: skip
    print(f"  quarter tonnes and gross intensity: report's CEMS sections from the hourly rows"
          f" {s['report_s']:.3f} s; straight from the raw minute rows {s['raw_s']:.3f} s;"
          f" ratio {s['raw_s'] / s['report_s']:.1f}x")  # fmt: skip
    print(f"  figures agree: max relative difference quarter t {s['rel']['quarter_t']:.1e},"
          f" gross g/kWh {s['rel']['gross_g_kwh']:.1e}; valid and substituted hours equal:"
          f" {s['hours_equal']} ({s['quarter_t']:,.0f} t, {s['sub_h']} substituted h)")  # fmt: skip
    if max(s["rel"].values()) > 1e-6 or not s["hours_equal"]:
        raise SystemExit("raw and report figures differ")


async def _bench_table(conn: asyncpg.Connection, name: str) -> bool:
    """An hourly table shaped like readings_1h (the benchmark writes hours straight in)."""
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} (bucket timestamptz, device_id text, metric text,"
        " avg float8, min float8, max float8, count bigint, n_all bigint)"
    )
    return True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--sensors", type=int, default=50_000)
    parser.add_argument("--subset", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.units, args.sensors, args.subset))
