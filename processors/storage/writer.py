"""The batch writer: readings, device registry and dead letters in one transaction each batch.

One :meth:`ReadingStore.write` call is one transaction:

1. Fast path: binary COPY of the batch straight into ``readings`` inside a savepoint. When no
   reading of the batch is stored yet (the normal case) this is all, and ``devices`` is
   upserted with the batch's own per-device counts.
2. When the COPY hits the primary key (a redelivered batch, or a reading twice in one batch)
   the savepoint is rolled back and the slow path runs: COPY into a per-connection temporary
   staging table, then ``INSERT INTO readings ... SELECT FROM staging ON CONFLICT DO NOTHING
   RETURNING`` - a redelivered reading (same device, metric, ts) is skipped, so readings are
   stored exactly once however often Kafka delivers them (the first stored value wins); late
   and out-of-order readings are ordinary rows, also into compressed TimescaleDB chunks.
3. On the slow path ``devices`` is upserted in the same statement, counting only the rows
   step 2 actually inserted, so ``readings_count`` stays exact under redelivery.
4. Upsert ``dead_letters`` keyed by (mqtt_topic, payload_sha256): the same bad bytes on the
   same topic are one row whose ``occurrences`` grows with every delivery, redeliveries
   included.
5. Commit. Nothing is visible (and the caller must not commit Kafka offsets) before that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from ghgwatch.settings import DbSettings
from ingest import DeadLetterRecord, ReadingRecord
from processors.exceptions import SchemaMissing
from processors.storage.decode import DeadLetter
from processors.storage.pgerrors import DEFAULT_RETRY_AFTER_S, pg_errors

__all__ = ["REQUIRED_TABLES", "ReadingStore", "WriteResult"]

log = structlog.get_logger(__name__)

REQUIRED_TABLES = ("devices", "readings", "dead_letters")
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0
_STAGE = "_ghgw_stage_readings"
_STAGE_COLUMNS = ("ts", "device_id", "metric", "value", "flag", "received_at")

_CREATE_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    ts timestamptz, device_id text, metric text, value double precision, flag text,
    received_at timestamptz
) ON COMMIT DELETE ROWS"""

# The staging table name is a module constant, not input.
_INSERT_READINGS = f"""
WITH ins AS (
    INSERT INTO readings (ts, device_id, metric, value, flag, received_at)
    SELECT ts, device_id, metric, value, flag, received_at FROM {_STAGE}
    ON CONFLICT DO NOTHING
    RETURNING device_id, ts, received_at
), per_device AS (
    SELECT device_id, count(*) AS n, min(received_at) AS first_seen,
           max(received_at) AS last_seen, max(ts) AS last_ts
    FROM ins GROUP BY device_id
), dev AS (
    INSERT INTO devices AS d (device_id, kind, network, site, device, location, first_seen,
                              last_seen, last_reading_ts, readings_count)
    SELECT u.device_id, u.kind, u.network, u.site, u.device, u.location,
           coalesce(p.first_seen, u.first_seen), coalesce(p.last_seen, u.last_seen),
           p.last_ts, coalesce(p.n, 0)
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::timestamptz[], $8::timestamptz[])
         AS u(device_id, kind, network, site, device, location, first_seen, last_seen)
    LEFT JOIN per_device p USING (device_id)
    ON CONFLICT (device_id) DO UPDATE SET
        kind = EXCLUDED.kind,
        network = EXCLUDED.network,
        site = EXCLUDED.site,
        device = EXCLUDED.device,
        location = coalesce(EXCLUDED.location, d.location),
        first_seen = least(d.first_seen, EXCLUDED.first_seen),
        last_seen = greatest(d.last_seen, EXCLUDED.last_seen),
        last_reading_ts = greatest(d.last_reading_ts, EXCLUDED.last_reading_ts),
        readings_count = d.readings_count + EXCLUDED.readings_count
)
SELECT (SELECT count(*) FROM ins) AS inserted,
       (SELECT array_agg(extract(epoch FROM now() - received_at)::float8)
          FROM (SELECT DISTINCT device_id, received_at FROM ins) AS m) AS latencies"""  # noqa: S608

# The fast path's device upsert: the counts are the batch's own (every row was inserted).
_UPSERT_DEVICES = """
INSERT INTO devices AS d (device_id, kind, network, site, device, location, first_seen,
                          last_seen, last_reading_ts, readings_count)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::bigint[])
ON CONFLICT (device_id) DO UPDATE SET
    kind = EXCLUDED.kind,
    network = EXCLUDED.network,
    site = EXCLUDED.site,
    device = EXCLUDED.device,
    location = coalesce(EXCLUDED.location, d.location),
    first_seen = least(d.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(d.last_seen, EXCLUDED.last_seen),
    last_reading_ts = greatest(d.last_reading_ts, EXCLUDED.last_reading_ts),
    readings_count = d.readings_count + EXCLUDED.readings_count"""

_UPSERT_DEAD = """
INSERT INTO dead_letters AS d (mqtt_topic, device_id, reason, detail, payload, payload_sha256,
                               received_at, last_received_at, occurrences)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[],
                     $7::timestamptz[], $8::timestamptz[], $9::int[])
ON CONFLICT (mqtt_topic, payload_sha256) DO UPDATE SET
    occurrences = d.occurrences + EXCLUDED.occurrences,
    received_at = least(d.received_at, EXCLUDED.received_at),
    last_received_at = greatest(d.last_received_at, EXCLUDED.last_received_at),
    device_id = coalesce(d.device_id, EXCLUDED.device_id)"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :meth:`ReadingStore.write` stored.

    Attributes:
        inserted: readings newly stored.
        duplicates: readings skipped because they were already stored (redelivery).
        dead_letters: dead-letter deliveries recorded (new rows plus repeat occurrences).
        latencies_s: for each newly stored message, seconds from the bridge receiving it to
            the storing transaction (``stored_at - received_at``).
    """

    inserted: int
    duplicates: int
    dead_letters: int
    latencies_s: tuple[float, ...] = field(default=(), repr=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_CREATE_STAGE)


def _device_arrays(records: Sequence[ReadingRecord]) -> list[list[Any]]:
    """Column arrays of the batch's devices, one entry per device (first/last received)."""
    seen: dict[str, list[Any]] = {}
    for rec in records:
        row = seen.get(rec.device_id)
        if row is None:
            seen[rec.device_id] = [
                rec.device_id,
                rec.kind.value,
                rec.network,
                rec.site,
                rec.device,
                rec.location.value if rec.location is not None else None,
                rec.received_at,
                rec.received_at,
            ]
            continue
        if rec.location is not None:
            row[5] = rec.location.value
        row[6] = min(row[6], rec.received_at)
        row[7] = max(row[7], rec.received_at)
    return [list(col) for col in zip(*seen.values(), strict=True)] if seen else [[]] * 8


def _device_counts(records: Sequence[ReadingRecord]) -> tuple[list[Any], list[Any]]:
    """Per device of the batch (in :func:`_device_arrays` order): newest reading ts, count."""
    last_ts: dict[str, datetime] = {}
    counts: dict[str, int] = {}
    for rec in records:
        if not rec.readings:
            continue
        newest = max(r.ts for r in rec.readings)
        prev = last_ts.get(rec.device_id)
        last_ts[rec.device_id] = newest if prev is None or newest > prev else prev
        counts[rec.device_id] = counts.get(rec.device_id, 0) + len(rec.readings)
    order = dict.fromkeys(rec.device_id for rec in records)
    return [last_ts.get(d) for d in order], [counts.get(d, 0) for d in order]


def _reading_rows(
    records: Sequence[ReadingRecord],
) -> list[tuple[datetime, str, str, float, str, datetime]]:
    rows: list[tuple[datetime, str, str, float, str, datetime]] = []
    append = rows.append
    for rec in records:
        device_id = rec.device_id
        received_at = rec.received_at
        for r in rec.readings:
            append((r.ts, device_id, r.metric, r.value, r.flag, received_at))
    return rows


def _dead_arrays(dead: Sequence[DeadLetterRecord | DeadLetter]) -> list[list[Any]]:
    """Column arrays of the dead letters, the same (topic, payload) merged into one row."""
    merged: dict[tuple[str, bytes], list[Any]] = {}
    for item in dead:
        d = DeadLetter.from_record(item) if isinstance(item, DeadLetterRecord) else item
        sha = d.payload_sha256
        row = merged.get((d.mqtt_topic, sha))
        if row is None:
            merged[(d.mqtt_topic, sha)] = [
                d.mqtt_topic,
                d.device_id,
                d.reason,
                d.detail,
                d.payload,
                sha,
                d.received_at,
                d.received_at,
                1,
            ]
            continue
        row[6] = min(row[6], d.received_at)
        row[7] = max(row[7], d.received_at)
        row[8] += 1
    return [list(col) for col in zip(*merged.values(), strict=True)]


async def _copy_new_rows(
    conn: asyncpg.Connection | PoolConnectionProxy,
    rows: list[tuple[datetime, str, str, float, str, datetime]],
) -> bool:
    """COPY ``rows`` straight into ``readings`` in a savepoint; False (nothing kept) when any
    of them is already stored or repeated in the batch."""
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("readings", records=rows, columns=_STAGE_COLUMNS)
    except asyncpg.UniqueViolationError:
        return False
    return True


class ReadingStore:
    """Stores batches of readings and dead letters in PostgreSQL / TimescaleDB.

    Use as an async context manager (or call :meth:`start` and :meth:`close`). Every
    database error is translated in :func:`~processors.storage.pgerrors.pg_errors`.

    Args:
        dsn: the PostgreSQL URL.
        cfg: the ``db`` settings section (pool size, command timeout).
        retry_after_s: how long a :class:`StorageBackpressure` asks callers to wait.
    """

    def __init__(
        self, dsn: str, cfg: DbSettings, *, retry_after_s: float = DEFAULT_RETRY_AFTER_S
    ) -> None:
        self._dsn = dsn
        self._cfg = cfg
        self._retry_after_s = retry_after_s
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> ReadingStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the pool and check the schema exists.

        Raises:
            SchemaMissing: the schema is missing (run ``ghgwatch db migrate``).
            FatalError: the credentials were refused.
            StorageBackpressure: the database cannot be reached right now.
        """
        if self._pool is not None:
            raise RuntimeError("ReadingStore already started")
        with pg_errors("connect", retry_after=self._retry_after_s):
            async with asyncio.timeout(CONNECT_TIMEOUT_S + self._cfg.command_timeout_s):
                pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=min(self._cfg.pool_min, self._cfg.pool_max),
                    max_size=self._cfg.pool_max,
                    command_timeout=self._cfg.command_timeout_s,
                    timeout=CONNECT_TIMEOUT_S,
                    init=_init_connection,
                )
        self._pool = pool
        try:
            await self.check_schema()
        except BaseException:
            await self.close()
            raise

    async def check_schema(self) -> None:
        """Raise :class:`~processors.exceptions.SchemaMissing` unless the core tables exist."""
        pool = self._require_pool()
        with pg_errors("check schema", retry_after=self._retry_after_s):
            async with asyncio.timeout(self._cfg.command_timeout_s):
                found = await pool.fetchval(
                    "SELECT array_agg(t) FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
                    list(REQUIRED_TABLES),
                )
        if found:
            raise SchemaMissing(
                f"database schema missing ({', '.join(found)}): run `ghgwatch db migrate`"
            )

    async def close(self) -> None:
        """Close the pool (waiting at most ``CLOSE_TIMEOUT_S``, then terminating)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await pool.close()
        except (TimeoutError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
            pool.terminate()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("ReadingStore is not started")
        return self._pool

    async def write(
        self,
        records: Sequence[ReadingRecord],
        dead: Sequence[DeadLetterRecord | DeadLetter] = (),
    ) -> WriteResult:
        """Store readings and dead letters atomically (see the module docstring for the steps).

        Args:
            records: accepted messages from the readings topic.
            dead: dead letters (bridge rejects, or records the processor could not decode).

        Returns:
            How many readings were inserted, how many were already stored, how many
            dead-letter deliveries were recorded.

        Raises:
            StorageBackpressure: connection lost or refused, too many connections, timeout:
                nothing was stored; retry later.
            FatalError: the database refused the data or the schema (a bug); chained.
        """
        pool = self._require_pool()
        rows = _reading_rows(records)
        devices = _device_arrays(records) if records else None
        dead_cols = _dead_arrays(dead) if dead else None
        inserted = 0
        latencies: tuple[float, ...] = ()
        with pg_errors("write batch", retry_after=self._retry_after_s):
            async with (
                asyncio.timeout(self._cfg.command_timeout_s + CONNECT_TIMEOUT_S),
                pool.acquire() as conn,
                conn.transaction(),
            ):
                fast = bool(rows) and await _copy_new_rows(conn, rows)
                if fast and devices is not None:
                    await conn.execute(_UPSERT_DEVICES, *devices, *_device_counts(records))
                    inserted = len(rows)
                    now = datetime.now(UTC)
                    latencies = tuple(
                        (now - rec.received_at).total_seconds()
                        for rec in {(r.device_id, r.received_at): r for r in records}.values()
                    )
                elif devices is not None:
                    if rows:
                        await conn.copy_records_to_table(
                            _STAGE, records=rows, columns=_STAGE_COLUMNS
                        )
                    result = await conn.fetchrow(_INSERT_READINGS, *devices)
                    assert result is not None
                    inserted = int(result["inserted"])
                    latencies = tuple(result["latencies"] or ())
                if dead_cols is not None:
                    await conn.execute(_UPSERT_DEAD, *dead_cols)
        return WriteResult(
            inserted=inserted,
            duplicates=len(rows) - inserted,
            dead_letters=len(dead),
            latencies_s=latencies,
        )
