"""Schema migrations: versioned SQL files from every package, then the TimescaleDB layer.

How it works, in order (``ghgwatch db migrate`` calls :func:`migrate`):

1. Take a PostgreSQL advisory lock (:data:`MIGRATE_LOCK_KEY`), so concurrent runs queue up
   instead of racing; the wait is bounded by :data:`MIGRATE_LOCK_TIMEOUT_S`.
2. Create ``schema_migrations(version, name, applied_at)`` if missing.
3. Collect ``NNN_name.sql`` files from every migration folder (see below), sort them by
   version and apply each one not yet recorded, each in its own transaction together with
   its ``schema_migrations`` row. Running twice applies nothing the second time.
4. Apply the aggregate layer, idempotently, on every run:

   - TimescaleDB available (``pg_available_extensions``) and not disabled: create the
     extension, turn ``readings`` into a hypertable on ``ts`` (existing rows migrated), set
     its chunk interval, compression (segment by ``device_id, metric``, order by ``ts``) and
     compression / retention policies, and create the continuous aggregates ``readings_1m``
     and ``readings_1h`` with refresh policies and real-time aggregation. A database where
     the extension appeared after an earlier plain run is upgraded in place.
   - Plain PostgreSQL: ``readings_1m`` and ``readings_1h`` are plain views with the same
     columns.

   Both aggregates have the columns ``bucket, device_id, metric, avg, min, max, count,
   n_all``: ``avg/min/max/count`` over readings flagged ``N`` (HJ 212 normal) and ``n_all``
   counting every reading in the bucket.

Migration folders, applied together in version order:

- ``processors/storage/migrations`` (versions 001-049: core storage),
- ``registry/migrations`` (050-099), ``processors/detection/migrations`` (100-199),
  ``alerts/migrations`` (200-299) and ``reports/migrations`` (300-399) when
  those packages have such a folder: every package named in :data:`MIGRATION_PACKAGES` is
  looked up without importing it,
- any ``extra_dirs`` passed to :func:`migrate` (tests, plug-ins).

To add migrations for a package, put ``NNN_name.sql`` files in ``<package>/migrations/``
(listed in :data:`MIGRATION_PACKAGES`), using a version range of your own; a version used
twice is a :class:`~core.errors.ConfigurationError`. Never edit an applied file: add a
new one. Files are plain SQL run as one transaction; statements that cannot run in a
transaction (``CREATE INDEX CONCURRENTLY``) do not belong there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import structlog

from adapters.pgerrors import pg_errors
from core.errors import ConfigurationError
from core.settings import DbSettings

__all__ = [
    "MIGRATE_LOCK_KEY",
    "MIGRATE_LOCK_TIMEOUT_S",
    "MIGRATIONS_DIR",
    "MIGRATION_PACKAGES",
    "Migration",
    "MigrationReport",
    "discover_migrations",
    "migrate",
    "timescale_available",
]

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Packages whose ``migrations/`` folder (if any) is part of the schema, in version-range order.
MIGRATION_PACKAGES = ("processors.storage", "registry", "processors.detection", "alerts", "reports")
# Arbitrary constant shared by every ghgwatch migrator ("ghgw" in ASCII).
MIGRATE_LOCK_KEY = 0x67686777
# A migration may take a while on a large database; a stuck lock holder must not hang us.
MIGRATE_LOCK_TIMEOUT_S = 300.0
_LOCK_POLL_S = 0.1
CONNECT_TIMEOUT_S = 10.0
# Creating a hypertable from a big plain table moves every row; allow for it.
DDL_TIMEOUT_S = 3600.0

_FILE_RE = re.compile(r"^(\d{3,})_([A-Za-z0-9_\-]+)\.sql$")

# 1-minute aggregates follow data closely; hourly ones are refreshed less often.
_AGGREGATES = (
    ("readings_1m", "1 minute", "1 minute", "1 minute"),
    ("readings_1h", "1 hour", "1 hour", "30 minutes"),
)
# time_bucket's default origin for timestamptz; date_bin uses it so both paths agree.
_BUCKET_ORIGIN = "2000-01-03 00:00:00+00"


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL file."""

    version: int
    name: str
    path: Path


@dataclass(slots=True)
class MigrationReport:
    """What :func:`migrate` did.

    Attributes:
        applied: ``NNN_name`` of each migration applied by this run, in order.
        timescale: True when the TimescaleDB layer is in place.
        notes: what the aggregate layer did (created, upgraded, already present).
    """

    applied: list[str] = field(default_factory=list)
    timescale: bool = False
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary lines for the CLI."""
        out = [f"applied {name}" for name in self.applied]
        if not self.applied:
            out.append("schema up to date: no migrations to apply")
        out.extend(self.notes)
        out.append(
            "timescaledb: hypertable, compression, policies, continuous aggregates"
            if self.timescale
            else "timescaledb: not available; plain PostgreSQL tables and views"
        )
        return out


def _package_dir(package: str) -> Path | None:
    """``<package>/migrations`` if the package is installed and has one (not imported)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "migrations"
        if candidate.is_dir():
            return candidate
    return None


def discover_migrations(extra_dirs: Iterable[Path] = ()) -> list[Migration]:
    """All migration files of the known packages plus ``extra_dirs``, in version order.

    Args:
        extra_dirs: more folders of ``NNN_name.sql`` files.

    Returns:
        The migrations sorted by version.

    Raises:
        ConfigurationError: two files share a version.
    """
    dirs: list[Path] = []
    for package in MIGRATION_PACKAGES:
        found = _package_dir(package)
        if found is not None:
            dirs.append(found)
    dirs.extend(Path(d) for d in extra_dirs)
    by_version: dict[int, Migration] = {}
    seen_dirs: set[Path] = set()
    for given in dirs:
        folder = given.resolve()
        if folder in seen_dirs:
            continue
        seen_dirs.add(folder)
        for path in sorted(folder.glob("*.sql")):
            match = _FILE_RE.match(path.name)
            if match is None:
                raise ConfigurationError(f"migration file name must be NNN_name.sql: {path}")
            version = int(match.group(1))
            if version in by_version:
                raise ConfigurationError(
                    f"migration version {version} used twice: {by_version[version].path}, {path}"
                )
            by_version[version] = Migration(version, match.group(2), path)
    return [by_version[v] for v in sorted(by_version)]


async def timescale_available(conn: asyncpg.Connection) -> bool:
    """True when the server can create (or already has) the timescaledb extension.

    The extension must be installed and loaded at server start
    (``shared_preload_libraries``): creating it otherwise fails and ends the session.
    """
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        " AS installed,"
        " 'timescaledb' = ANY (string_to_array("
        "   replace(current_setting('shared_preload_libraries'), ' ', ''), ',')) AS preloaded"
    )
    assert row is not None
    if row["installed"] and not row["preloaded"]:
        log.warning(
            "timescaledb is installed but not in shared_preload_libraries;"
            " using plain PostgreSQL tables and views until the server preloads it"
        )
    return bool(row["installed"] and row["preloaded"])


async def _acquire_lock(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + MIGRATE_LOCK_TIMEOUT_S
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATE_LOCK_KEY):
        if time.monotonic() > deadline:
            raise ConfigurationError(
                f"another migration held the schema lock for over {MIGRATE_LOCK_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(_LOCK_POLL_S)


async def _apply_files(
    conn: asyncpg.Connection, migrations: Sequence[Migration], report: MigrationReport
) -> None:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version integer PRIMARY KEY,
               name text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    for m in migrations:
        if m.version in done:
            continue
        sql = m.path.read_text(encoding="utf-8")
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
            )
        label = f"{m.version:03d}_{m.name}"
        report.applied.append(label)
        log.info("migration applied", migration=label)


async def _relkind(conn: asyncpg.Connection, name: str) -> str | None:
    """'r' table, 'v' view, 'm' materialized view, None when missing (public schema)."""
    kind = await conn.fetchval(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relname = $1",
        name,
    )
    return str(kind) if kind is not None else None


def _aggregate_select(bucket_expr: str) -> str:
    # Built from module constants only, never from input.
    return f"""
        SELECT {bucket_expr} AS bucket,
               device_id,
               metric,
               avg(value) FILTER (WHERE flag = 'N') AS avg,
               min(value) FILTER (WHERE flag = 'N') AS min,
               max(value) FILTER (WHERE flag = 'N') AS max,
               count(*) FILTER (WHERE flag = 'N') AS count,
               count(*) AS n_all
        FROM readings
        GROUP BY 1, device_id, metric"""  # noqa: S608


async def _plain_layer(conn: asyncpg.Connection, report: MigrationReport) -> None:
    has_extension = await conn.fetchval(
        "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
    )
    for view, width, _end, _every in _AGGREGATES:
        if has_extension and await _cagg_hypertable(conn, view) is not None:
            # A continuous aggregate from an earlier TimescaleDB run: keep it.
            report.notes.append(f"{view}: kept the existing continuous aggregate")
            continue
        bucket = f"date_bin(interval '{width}', ts, timestamptz '{_BUCKET_ORIGIN}')"
        await conn.execute(f"CREATE OR REPLACE VIEW {view} AS {_aggregate_select(bucket)}")


async def _is_hypertable(conn: asyncpg.Connection, table: str) -> bool:
    found = await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = $1",
        table,
    )
    return bool(found)


async def _job_config(conn: asyncpg.Connection, proc: str, table: str) -> str | None:
    """The JSON config of the policy job ``proc`` on ``table``, None when there is none."""
    cfg = await conn.fetchval(
        "SELECT config::text FROM timescaledb_information.jobs"
        " WHERE proc_name = $1 AND hypertable_schema = current_schema()"
        " AND hypertable_name = $2",
        proc,
        table,
    )
    return str(cfg) if cfg is not None else None


async def _cagg_hypertable(conn: asyncpg.Connection, view: str) -> str | None:
    name = await conn.fetchval(
        "SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = current_schema() AND view_name = $1",
        view,
    )
    return str(name) if name is not None else None


async def _timescale_layer(
    conn: asyncpg.Connection, cfg: DbSettings, report: MigrationReport
) -> None:
    async with conn.transaction():
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        if not await _is_hypertable(conn, "readings"):
            # Plain views from an earlier run depend on readings; caggs replace them below.
            for view, *_ in _AGGREGATES:
                if await _relkind(conn, view) == "v" and await _cagg_hypertable(conn, view) is None:
                    await conn.execute(f"DROP VIEW {view}")
            await conn.execute(
                "SELECT create_hypertable('readings', 'ts',"
                " chunk_time_interval => $1::text::interval, migrate_data => true)",
                cfg.chunk_interval,
            )
            report.notes.append("readings: converted to a hypertable")
        await conn.execute(
            "SELECT set_chunk_time_interval('readings', $1::text::interval)", cfg.chunk_interval
        )
        compressed = await conn.fetchval(
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
        )
        if not compressed:
            await conn.execute(
                "ALTER TABLE readings SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = 'device_id, metric',"
                " timescaledb.compress_orderby = 'ts')"
            )
        await _ensure_policy(
            conn,
            "policy_compression",
            "readings",
            "compress_after",
            cfg.compress_after,
            add="SELECT add_compression_policy('readings', $1::text::interval)",
            remove="SELECT remove_compression_policy('readings', if_exists => true)",
        )
        await _ensure_policy(
            conn,
            "policy_retention",
            "readings",
            "drop_after",
            cfg.raw_retention,
            add="SELECT add_retention_policy('readings', $1::text::interval)",
            remove="SELECT remove_retention_policy('readings', if_exists => true)",
        )

    for view, width, end_offset, every in _AGGREGATES:
        if await _cagg_hypertable(conn, view) is None:
            if await _relkind(conn, view) == "v":
                await conn.execute(f"DROP VIEW {view}")
            bucket = f"time_bucket(interval '{width}', ts)"
            # WITH NO DATA: creation stays cheap inside the migration; the refresh policy
            # (and real-time aggregation meanwhile) fills it in.
            await conn.execute(
                f"CREATE MATERIALIZED VIEW {view} WITH (timescaledb.continuous,"
                f" timescaledb.materialized_only = false) AS {_aggregate_select(bucket)}"
                " WITH NO DATA"
            )
            report.notes.append(f"{view}: continuous aggregate created")
        else:
            await conn.execute(
                f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = false)"
            )
        # Late readings are refreshed as far back as raw data is kept (NULL: all of it).
        existing = await _job_config(conn, "policy_refresh_continuous_aggregate", view)
        if existing is not None:
            same = await conn.fetchval(
                "SELECT ($1::jsonb ->> 'start_offset')::interval"
                " IS NOT DISTINCT FROM $2::text::interval",
                existing,
                cfg.raw_retention,
            )
            if not same:
                await conn.execute(
                    "SELECT remove_continuous_aggregate_policy($1::regclass, if_exists => true)",
                    view,
                )
                existing = None
        if existing is None:
            await conn.execute(
                "SELECT add_continuous_aggregate_policy($1::regclass,"
                " start_offset => $2::text::interval, end_offset => $3::text::interval,"
                " schedule_interval => $4::text::interval)",
                view,
                cfg.raw_retention,
                end_offset,
                every,
            )
        if view == "readings_1m":
            await _ensure_policy(
                conn,
                "policy_retention",
                view,
                "drop_after",
                cfg.aggregate_retention,
                add=f"SELECT add_retention_policy('{view}', $1::text::interval)",
                remove=f"SELECT remove_retention_policy('{view}', if_exists => true)",
            )
    report.timescale = True


async def _ensure_policy(
    conn: asyncpg.Connection,
    proc: str,
    table: str,
    key: str,
    interval: str | None,
    *,
    add: str,
    remove: str,
) -> None:
    """Make the policy job match ``interval`` (None: no policy), replacing a different one."""
    existing = await _job_config(conn, proc, table)
    if interval is None:
        if existing is not None:
            await conn.execute(remove)
        return
    if existing is not None:
        current = await conn.fetchval(
            "SELECT ($1::jsonb ->> $2)::text::interval = $3::text::interval",
            existing,
            key,
            interval,
        )
        if current:
            return
        await conn.execute(remove)
    await conn.execute(add, interval)


async def migrate(
    dsn: str,
    cfg: DbSettings,
    *,
    extra_dirs: Iterable[Path] = (),
    timescale: bool | None = None,
) -> MigrationReport:
    """Create or upgrade the schema; safe to run twice and from several processes at once.

    Args:
        dsn: the PostgreSQL URL.
        cfg: the ``db`` settings section (chunk interval, compression and retention).
        extra_dirs: more folders of ``NNN_name.sql`` migrations.
        timescale: None (default) uses TimescaleDB when the server offers it; False forces
            the plain-PostgreSQL layer; True requires TimescaleDB.

    Returns:
        The migrations applied by this run and whether the TimescaleDB layer is in place.

    Raises:
        ConfigurationError: bad migration files, TimescaleDB required but missing, or the
            schema lock not obtained in time.
        StorageBackpressure: the database cannot be reached right now.
        FatalError: the database refused the SQL or the credentials.
    """
    migrations = discover_migrations(extra_dirs)
    report = MigrationReport()
    with pg_errors("connect for migration"):
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S, command_timeout=DDL_TIMEOUT_S)
    try:
        with pg_errors("migrate"):
            await _acquire_lock(conn)
            try:
                await _apply_files(conn, migrations, report)
                available = await timescale_available(conn)
                if timescale and not available:
                    raise ConfigurationError("timescaledb is required but not available")
                if available and timescale is not False:
                    await _timescale_layer(conn, cfg, report)
                else:
                    await _plain_layer(conn, report)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)
    return report
