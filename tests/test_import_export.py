"""History import through the readings path (stored once, twice imported still once, bad
rows reported by line) and export of what was stored, as CSV and Parquet."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq

from core.settings import Settings
from ghgwatch.history_io import export_table, import_file
from processors import Processor
from processors.storage import migrate

DEADLINE_S = 60.0


async def _count(db: str, expected: int) -> int:
    conn = await asyncpg.connect(db)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while (got := int(await conn.fetchval("select count(*) from readings"))) < expected:
                await asyncio.sleep(0.2)
        return got
    except TimeoutError:
        return int(await conn.fetchval("select count(*) from readings"))
    finally:
        await conn.close()


def _write_csv(path: Path, t0: datetime) -> list[int]:
    """40 good rows and bad ones; returns the bad rows' line numbers."""
    rows = [["ts", "device_id", "kind", "metric", "value", "flag", "location"]]
    for i in range(20):
        ts = (t0 + timedelta(minutes=i)).isoformat()
        rows.append([ts, "baotou/kundulun/pic-01", "city", "co2_ppm", str(420 + i), "", ""])
        rows.append([ts, "ordos-coal/buertai/t1-0302", "mine", "ch4_pct_vol", "0.3", "N", "T1"])
    bad = [
        [t0.isoformat(), "baotou/kundulun/pic-01", "city", "co2_ppm", "lots", "", ""],
        [t0.isoformat(), "baotou/kundulun", "city", "co2_ppm", "1", "", ""],
        ["2026-01-01T00:00:00", "baotou/kundulun/pic-01", "city", "co2_ppm", "1", "", ""],
        [t0.isoformat(), "baotou/kundulun/pic-01", "city", "ch4_pct_vol", "1", "", ""],
        [t0.isoformat(), "ordos-coal/buertai/t1-0302", "mine", "ch4_pct_vol", "0.3", "", ""],
    ]
    lines = []
    for k, row in enumerate(bad):
        at = 5 + 7 * k
        rows.insert(at, row)
        lines.append(at + 1)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return sorted(lines)


async def test_import_twice_stores_once_and_reports_bad_rows_by_line(
    settings: Settings, tmp_path: Path
) -> None:
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=3)
    path = tmp_path / "history.csv"
    bad_lines = _write_csv(path, t0)
    await migrate(settings.db_url(), settings.db)
    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    try:
        first = await import_file(path, settings)
        assert await _count(settings.db_url(), 40) == 40
        second = await import_file(path, settings)
        await asyncio.sleep(2.0)  # the second copy has reached the processor by now
        assert await _count(settings.db_url(), 40) == 40  # not 80
    finally:
        stop.set()
        await asyncio.wait_for(processor, 30)
    for report in (first, second):
        assert report.rows == 45
        assert report.produced == 40
        assert [p.line for p in report.problems] == bad_lines
        assert [p.reason for p in report.problems] == [
            "schema", "bad_topic", "schema", "metric_not_for_kind", "missing_location"
        ]  # fmt: skip

    out_csv, out_pq = tmp_path / "r.csv", tmp_path / "r.parquet"
    window = {"since": t0, "until": t0 + timedelta(hours=1)}
    seen: list[int] = []
    n = await export_table(settings, "readings", out_csv, devices=["baotou/kundulun/pic-01"],
                           fmt="csv", progress=seen.append, **window)  # fmt: skip
    assert n == 20
    assert sum(seen) == 20
    with out_csv.open() as fh:
        exported = list(csv.DictReader(fh))
    assert [float(r["value"]) for r in exported] == [420.0 + i for i in range(20)]
    n = await export_table(settings, "readings", out_pq, devices=[], fmt="parquet", **window)
    assert n == 40
    table = pq.read_table(out_pq)
    assert table.num_rows == 40
    assert set(table.column("device_id").to_pylist()) == {
        "baotou/kundulun/pic-01", "ordos-coal/buertai/t1-0302"
    }  # fmt: skip
    empty = tmp_path / "none.parquet"
    assert await export_table(settings, "detections", empty, devices=[], fmt="parquet",
                              **window) == 0  # fmt: skip
    assert pq.read_table(empty).num_rows == 0


async def test_hj212_dump_imported_like_the_gateway_takes_it(
    settings_factory, tmp_path: Path
) -> None:
    from zoneinfo import ZoneInfo

    from registry.credentials import hash_password
    from wire.hj212 import build_frame, build_segment, format_time

    tz = ZoneInfo("Asia/Shanghai")
    logger = {"kind": "cems", "network": "beifang", "site": "dalate", "device": "unit-3",
              "password_hash": hash_password("123456", iterations=1000)}  # fmt: skip
    settings = settings_factory(gateway={"loggers": {"MN01": logger}})
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)

    def frame(cn: str, mn: str, minute: int) -> bytes:
        when = format_time(t0 + timedelta(minutes=minute), tz)
        kind = "Rtd" if cn == "2011" else "Avg"
        cp = f"DataTime={when};a05001-{kind}=11.{minute},a05001-Flag=N;a19001-{kind}=6.0"
        return build_frame(build_segment(qn=None, st="31", cn=cn, pw="123456", mn=mn,
                                         flag=4, cp=cp))  # fmt: skip

    bad_crc = bytearray(frame("2011", "MN01", 9))
    bad_crc[-3] = ord("0") if bad_crc[-3] != ord("0") else ord("1")
    lines = [
        frame("2011", "MN01", 0), bytes(bad_crc), frame("2051", "MN01", 1),
        frame("2011", "NOPE", 2), frame("2061", "MN01", 0), frame("2011", "MN01", 3),
    ]  # fmt: skip
    dump = tmp_path / "logger.txt"
    dump.write_bytes(b"".join(line.rstrip(b"\r\n") + b"\n" for line in lines))
    await migrate(settings.db_url(), settings.db)
    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    try:
        report = await import_file(dump, settings)
        # 2011 and 2051 (the live and the backfill packets) are readings; 2061 is not.
        assert await _count(settings.db_url(), 6) == 6
    finally:
        stop.set()
        await asyncio.wait_for(processor, 30)
    assert [(p.line, p.reason) for p in report.problems] == [(2, "bad_crc"), (4, "unknown_mn")]
    assert report.produced == 3
