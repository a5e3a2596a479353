"""Schema migrations on a real PostgreSQL: idempotent, concurrent-safe, plain and Timescale."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from proc_helpers import T0, as_batches, mixed_records, reading_record

from adapters.ports import free_port
from core.errors import ConfigurationError
from core.settings import DbSettings
from processors.storage import (
    MIGRATIONS_DIR,
    ReadingStore,
    discover_migrations,
    migrate,
    timescale_available,
)
from wire import SourceKind

AGG_COLUMNS = ["bucket", "device_id", "metric", "avg", "min", "max", "count", "n_all"]


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database."""
    c = await asyncpg.connect(pg_url)
    yield c
    await c.close()


@pytest.fixture
async def timescale(conn: asyncpg.Connection) -> None:
    """Skip unless the server can load the timescaledb extension (installed *and* in
    shared_preload_libraries: an installed but not preloaded one is not used by migrate)."""
    if not await timescale_available(conn):
        pytest.skip(
            "timescaledb not loadable on this PostgreSQL (not installed, or installed but"
            " not in shared_preload_libraries)"
        )


async def _columns(conn: asyncpg.Connection, rel: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = $1 ORDER BY ordinal_position",
        rel,
    )
    return [r["column_name"] for r in rows]


async def _store_sample(pg_url: str, cfg: DbSettings) -> int:
    """Write normal readings plus one calibration-flagged reading; return readings stored."""
    records = mixed_records(devices_per_kind=1, steps=12)
    calibrating = reading_record(SourceKind.CITY, 0, 100, flag="C")
    async with ReadingStore(pg_url, cfg) as store:
        result = await store.write(as_batches([*records, calibrating]))
    return result.inserted


def test_migration_files_ship_inside_the_package() -> None:
    """The core SQL lives in the processors package (so the wheel carries it) as 001."""
    assert MIGRATIONS_DIR.is_relative_to(Path(__file__).resolve().parents[2] / "processors")
    found = discover_migrations()
    assert found[0].version == 1
    assert found[0].path.parent == MIGRATIONS_DIR
    assert [m.version for m in found] == sorted(m.version for m in found)


async def test_running_migrate_twice_is_harmless(pg_url: str, conn: asyncpg.Connection) -> None:
    """The second run applies nothing and leaves the data alone."""
    cfg = DbSettings(url=pg_url)
    first = await migrate(pg_url, cfg)
    stored = await _store_sample(pg_url, cfg)
    second = await migrate(pg_url, cfg)
    assert "001_core" in first.applied
    assert second.applied == []
    assert second.timescale == first.timescale
    assert any("up to date" in line for line in second.lines())
    assert await conn.fetchval("SELECT count(*) FROM readings") == stored
    versions = await conn.fetch("SELECT version FROM schema_migrations")
    assert len(versions) == len(discover_migrations())


async def test_concurrent_migrations_apply_each_file_once(
    pg_url: str, conn: asyncpg.Connection
) -> None:
    """Four migrate calls at once: the advisory lock lets exactly one apply each file."""
    cfg = DbSettings(url=pg_url)
    reports = await asyncio.gather(*(migrate(pg_url, cfg) for _ in range(4)))
    applied = [name for r in reports for name in r.applied]
    assert sorted(applied) == sorted(set(applied))
    assert "001_core" in applied
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
        discover_migrations()
    )


async def test_plain_postgres_layer_has_aggregate_views(
    pg_url: str, conn: asyncpg.Connection
) -> None:
    """timescale=False: no hypertable; readings_1m/1h are views over normal-flag readings."""
    cfg = DbSettings(url=pg_url)
    report = await migrate(pg_url, cfg, timescale=False)
    assert report.timescale is False
    assert (
        await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    )
    await _store_sample(pg_url, cfg)
    for view in ("readings_1m", "readings_1h"):
        assert await _columns(conn, view) == AGG_COLUMNS
        kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = $1", view)
        assert kind == "v"
    # The calibration reading (flag C) is in n_all but not in count/avg.
    row = await conn.fetchrow(
        "SELECT sum(count) AS n, sum(n_all) AS n_all FROM readings_1h WHERE device_id = $1",
        "city-net/site-0/dev-0",
    )
    assert row["n_all"] == row["n"] + 3
    one = await conn.fetchrow(
        "SELECT bucket, avg, min, max, count, n_all FROM readings_1m"
        " WHERE device_id = 'city-net/site-0/dev-0' AND metric = 'co2_ppm' ORDER BY bucket LIMIT 1"
    )
    assert one["bucket"] == T0
    assert one["count"] == one["n_all"] == 6  # one reading every 10 s
    assert one["min"] <= one["avg"] <= one["max"]


async def test_timescale_layer_hypertable_policies_and_caggs(
    timescale: None, pg_url: str, conn: asyncpg.Connection
) -> None:
    """With TimescaleDB: hypertable, compression, policies, and caggs that return rows."""
    cfg = DbSettings(url=pg_url, chunk_interval="6 hours", raw_retention="90 days")
    report = await migrate(pg_url, cfg)
    assert report.timescale is True
    ht = await conn.fetchrow(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'readings'"
    )
    assert ht is not None
    assert ht["compression_enabled"]
    interval = await conn.fetchval(
        "SELECT time_interval FROM timescaledb_information.dimensions"
        " WHERE hypertable_name = 'readings'"
    )
    assert interval == timedelta(hours=6)
    jobs = {
        (r["proc_name"], r["hypertable_name"])
        for r in await conn.fetch(
            "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
        )
    }
    assert ("policy_compression", "readings") in jobs
    assert ("policy_retention", "readings") in jobs
    assert ("policy_refresh_continuous_aggregate", "readings_1m") in jobs
    assert ("policy_refresh_continuous_aggregate", "readings_1h") in jobs
    settings = await conn.fetch(
        "SELECT segmentby_column_index, orderby_column_index, attname"
        " FROM timescaledb_information.compression_settings WHERE hypertable_name = 'readings'"
    )
    assert {r["attname"] for r in settings if r["segmentby_column_index"]} == {
        "device_id",
        "metric",
    }
    assert {r["attname"] for r in settings if r["orderby_column_index"]} == {"ts"}

    stored = await _store_sample(pg_url, cfg)
    for view in ("readings_1m", "readings_1h"):
        assert await _columns(conn, view) == AGG_COLUMNS
        await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
        mat = await conn.fetchval(
            "SELECT format('%I.%I', materialization_hypertable_schema,"
            " materialization_hypertable_name)"
            " FROM timescaledb_information.continuous_aggregates WHERE view_name = $1",
            view,
        )
        assert await conn.fetchval(f"SELECT count(*) FROM {mat}") > 0
        assert await conn.fetchval(f"SELECT sum(n_all) FROM {view}") == stored
    row = await conn.fetchrow(
        "SELECT sum(count) AS n, sum(n_all) AS n_all FROM readings_1h WHERE device_id = $1",
        "city-net/site-0/dev-0",
    )
    assert row["n_all"] == row["n"] + 3
    # Real-time aggregation: rows written after the refresh show up at once.
    late = reading_record(SourceKind.MINE, 5, 2000)
    async with ReadingStore(pg_url, cfg) as store:
        await store.write(as_batches([late]))
    n = await conn.fetchval(
        "SELECT sum(n_all) FROM readings_1m WHERE device_id = $1", late.device_id
    )
    assert n == len(late.readings)


async def test_plain_database_gains_timescale_layer_on_rerun(
    timescale: None, pg_url: str, conn: asyncpg.Connection
) -> None:
    """A plain-PostgreSQL schema with data becomes a hypertable with caggs on the next run."""
    cfg = DbSettings(url=pg_url)
    await migrate(pg_url, cfg, timescale=False)
    stored = await _store_sample(pg_url, cfg)
    report = await migrate(pg_url, cfg)
    assert report.timescale is True
    assert report.applied == []
    assert any("hypertable" in note for note in report.notes)
    assert await conn.fetchval("SELECT count(*) FROM readings") == stored
    assert (
        await conn.fetchval("SELECT count(*) FROM timescaledb_information.continuous_aggregates")
        == 2
    )
    assert await conn.fetchval("SELECT sum(n_all) FROM readings_1h") == stored
    again = await migrate(pg_url, cfg)
    assert again.notes == []


async def test_extra_dirs_are_applied_in_version_order(
    pg_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A package's own folder joins the core files, ordered by version across folders."""
    (tmp_path / "150_detections.sql").write_text(
        "CREATE TABLE t150 (device_id text REFERENCES devices (device_id));"
    )
    (tmp_path / "120_first.sql").write_text("CREATE TABLE t120 (x int);")
    report = await migrate(pg_url, DbSettings(url=pg_url), extra_dirs=[tmp_path])
    assert report.applied.index("120_first") < report.applied.index("150_detections")
    assert report.applied.index("001_core") < report.applied.index("120_first")
    assert await conn.fetchval("SELECT to_regclass('t150') IS NOT NULL")


async def test_a_version_used_twice_is_a_configuration_error(tmp_path: Path) -> None:
    """Two files claiming one version are refused before touching the database."""
    (tmp_path / "001_clash.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigurationError, match="used twice"):
        discover_migrations([tmp_path])


async def test_failed_migration_leaves_nothing_behind(
    pg_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A broken file rolls back alone: earlier files stay applied, it is not recorded."""
    (tmp_path / "190_broken.sql").write_text("CREATE TABLE t190 (x int); SELECT nonsense;")
    with pytest.raises(Exception, match="nonsense"):
        await migrate(pg_url, DbSettings(url=pg_url), extra_dirs=[tmp_path])
    assert await conn.fetchval("SELECT to_regclass('t190') IS NULL")
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 1") == 1
    assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 190") == 0


async def test_late_readings_and_redelivery_into_compressed_chunks(
    timescale: None, pg_url: str, conn: asyncpg.Connection
) -> None:
    """Into compressed chunks: redelivery is skipped (first value wins), late readings land."""
    cfg = DbSettings(url=pg_url)
    await migrate(pg_url, cfg)
    records = mixed_records(devices_per_kind=1, steps=6)
    async with ReadingStore(pg_url, cfg) as store:
        first = await store.write(as_batches(records))
        compressed = await conn.fetch(
            "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') c"
        )
        assert compressed
        again = await store.write(as_batches(records))
        resent = reading_record(SourceKind.CEMS, 0, 3, received_delay_s=86_400)
        resent = resent.model_copy(
            update={"readings": [r.model_copy(update={"value": 5.5}) for r in resent.readings]}
        )
        late = reading_record(SourceKind.CEMS, 7, 2)
        third = await store.write(as_batches([resent, late]))
    assert (again.inserted, again.duplicates) == (0, first.inserted)
    assert third.inserted == len(late.readings)
    assert third.duplicates == len(resent.readings)
    assert await conn.fetchval("SELECT count(*) FROM readings WHERE value = 5.5") == 0
    total = first.inserted + third.inserted
    assert await conn.fetchval("SELECT count(*) FROM readings") == total
    assert await conn.fetchval("SELECT sum(readings_count) FROM devices") == total


async def _run_as_postgres(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, user="postgres", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")


async def test_timescale_installed_but_not_preloaded_falls_back_to_plain(
    timescale: None, conn: asyncpg.Connection
) -> None:
    """A server with the extension's files but without shared_preload_libraries (a fresh
    cluster of the same installation) gets the plain layer and a warning, not a crash."""
    major = int(await conn.fetchval("SHOW server_version_num")) // 10_000
    bin_dir = Path(f"/usr/lib/postgresql/{major}/bin")
    if not (bin_dir / "initdb").exists():
        pytest.skip(f"no PostgreSQL {major} programs in {bin_dir} to start a second cluster")
    # pytest's tmp_path is private to root; the server's user needs a folder of its own
    tmp_path = Path(tempfile.mkdtemp(prefix="ghgw-pg-"))
    shutil.chown(tmp_path, "postgres")
    pgdata = tmp_path / "pgdata"
    port = free_port()
    await _run_as_postgres(
        str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust"
    )
    options = f"-p {port} -k {tmp_path} -c listen_addresses=127.0.0.1"
    log_file = str(tmp_path / "pg.log")
    await _run_as_postgres(
        str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-o", options, "-l", log_file, "-w", "start"
    )
    try:
        report = await migrate(f"postgresql://postgres@127.0.0.1:{port}/postgres", DbSettings())
        assert report.timescale is False
        second = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        try:
            assert await second.fetchval("SELECT to_regclass('readings_1m')::text") == (
                "readings_1m"
            )
            assert not await second.fetchval(
                "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
            )
        finally:
            await second.close()
    finally:
        await _run_as_postgres(str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "stop")
        shutil.rmtree(tmp_path, ignore_errors=True)
