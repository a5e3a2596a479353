"""The batch writer: readings, device registry and dead letters in one transaction each batch.

One :meth:`ReadingStore.write` call is one transaction:

1. Fast path: binary COPY of the batch straight into ``readings`` inside a savepoint (the
   COPY data is laid out with numpy from the batches' columns, see
   :mod:`processors.storage.pgcopy`). When no
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

A record the database cannot take never stops the stream (quarantine):

1. Before the transaction, a batch whose header text holds NUL or a lone surrogate is not
   written as readings but as a dead letter with reason :data:`QUARANTINE_REASON` (checked
   once per distinct header); dead letters' own text is escaped (:func:`~wire.safe_text`)
   and their topic cut to :data:`~wire.MAX_DEAD_TOPIC_CHARS`.
2. If the write still cannot be stored for its data (SQLSTATE classes 22 data, 23
   integrity, 54 limits, a value asyncpg cannot encode, or a time outside what a
   ``datetime`` holds, checked in one numpy pass), the write is split in halves,
   each half its own transaction, down to the single records it refuses; those become
   quarantine dead letters naming the Kafka topic, partition and offset (when the batches
   came from :func:`~processors.storage.decode_values`), and the rest is stored. Each
   quarantined record is logged and counted in
   ``ghgwatch_processor_records_quarantined_total``.

On that split path the write is no longer one transaction: a crash in the middle means the
parts already committed are delivered again, readings are skipped as duplicates and dead
letters count one more occurrence. Connection errors are never split: they stay
:class:`~core.errors.StorageBackpressure` for the caller to retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
import structlog
from asyncpg.pool import PoolConnectionProxy

from adapters import ConsumedRecord
from adapters.pgerrors import DEFAULT_RETRY_AFTER_S, pg_errors
from core.settings import DbSettings
from processors.exceptions import SchemaMissing
from processors.storage.decode import (
    KAFKA_TOPIC_PREFIX,
    DeadLetter,
    KafkaBatches,
)
from processors.storage.pgcopy import COPY_COLUMNS, pair_blob, readings_copy_data
from wire import (
    MAX_DEAD_TOPIC_CHARS,
    DeadLetterRecord,
    ReadingBatch,
    ReadingFrame,
    epoch_us,
    from_epoch_us,
    safe_text,
)

__all__ = [
    "QUARANTINE_REASON",
    "REQUIRED_TABLES",
    "ReadingStore",
    "WriteResult",
]

log = structlog.get_logger(__name__)

REQUIRED_TABLES = ("devices", "readings", "dead_letters")
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0
_STAGE = "_ghgw_stage_readings"
Int64Array = npt.NDArray[np.int64]

QUARANTINE_REASON = "unstorable_record"
# SQLSTATE classes that mean "this data", not "this connection": data exception, integrity
# constraint violation, program limit exceeded (e.g. an index entry too large).
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
# The times a reading may carry: what a Python datetime holds (PostgreSQL holds more).
_MIN_STORABLE_US = epoch_us(datetime(1, 1, 2, tzinfo=UTC))
_MAX_STORABLE_US = epoch_us(datetime(9999, 12, 30, tzinfo=UTC))
_QUARANTINE_DETAIL_CHARS = 1000
_DEVICE_ID_CHARS = 200
_LOG_CHARS = 200

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
        dead_letters: dead-letter deliveries recorded (new rows plus repeat occurrences),
            quarantined records included.
        latencies_s: for each newly stored message, seconds from the bridge receiving it to
            the storing transaction (``stored_at - received_at``).
        quarantined: records the database could not store, stored as dead letters with
            reason :data:`QUARANTINE_REASON` instead.
    """

    inserted: int
    duplicates: int
    dead_letters: int
    latencies_s: tuple[float, ...] = field(default=(), repr=False)
    quarantined: int = 0

    def plus(self, other: WriteResult) -> WriteResult:
        """Both results added up (a write stored in parts)."""
        return WriteResult(
            inserted=self.inserted + other.inserted,
            duplicates=self.duplicates + other.duplicates,
            dead_letters=self.dead_letters + other.dead_letters,
            latencies_s=self.latencies_s + other.latencies_s,
            quarantined=self.quarantined + other.quarantined,
        )


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute(_CREATE_STAGE)


@dataclass(frozen=True, slots=True)
class _Batch:
    """A write's readings laid out for the database: COPY data and per-device columns."""

    rows: int
    copy_data: bytes
    devices: list[list[Any]]  # device_id, kind, network, site, device, location, first/last seen
    last_ts: list[datetime | None]
    counts: list[int]
    received_us: Int64Array  # per message


def _layout(batches: Sequence[ReadingBatch]) -> _Batch:
    """Concatenate the batches' columns, build the COPY data and the device registry rows.

    Python touches each message (and each of its few metric names) once; every per-reading
    step is a numpy operation over the whole write.
    """
    frame = ReadingFrame.of(batches)
    received = np.fromiter((b.received_us for b in batches), dtype=np.int64, count=len(batches))
    if not _times_storable(frame.ts_us, received):
        raise ValueError("a time is outside the storable years 1-9999")
    pair_index: dict[tuple[str, str], int] = {}
    blobs: list[bytes] = []

    def pair_of(b: ReadingBatch, metric: str) -> int:
        key = (b.header.device_id, metric)
        pid = pair_index.get(key)
        if pid is None:
            pid = pair_index[key] = len(blobs)
            blobs.append(pair_blob(*key))
        return pid

    pair = frame.ids(pair_of)
    data = readings_copy_data(
        frame.ts_us, pair, blobs, frame.value, frame.flag, frame.per_reading(received)
    )
    # The device registry: per device its identity, first and last receive time, newest
    # reading time and the readings carried; a location once named is kept.
    device_index: dict[str, int] = {}
    device_rows: list[list[Any]] = []
    device_of = np.empty(len(batches), dtype=np.intp)
    for i, b in enumerate(batches):
        h = b.header
        d = device_index.get(h.device_id)
        if d is None:
            d = device_index[h.device_id] = len(device_rows)
            device_rows.append([h.device_id, h.kind.value, h.network, h.site, h.device, None])
        if h.location is not None:
            device_rows[d][5] = h.location.value
        device_of[i] = d
    ndev = len(device_rows)
    first_seen = np.full(ndev, np.iinfo(np.int64).max, dtype=np.int64)
    last_seen = np.full(ndev, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first_seen, device_of, received)
    np.maximum.at(last_seen, device_of, received)
    newest = np.full(ndev, np.iinfo(np.int64).min, dtype=np.int64)
    filled = np.flatnonzero(frame.counts)
    if len(filled):
        starts = (np.cumsum(frame.counts) - frame.counts)[filled]
        np.maximum.at(newest, device_of[filled], np.maximum.reduceat(frame.ts_us, starts))
    per_device = np.bincount(device_of, weights=frame.counts, minlength=ndev).astype(np.int64)
    columns = [list(col) for col in zip(*device_rows, strict=True)] if ndev else [[]] * 6
    columns.append([from_epoch_us(t) for t in first_seen.tolist()])
    columns.append([from_epoch_us(t) for t in last_seen.tolist()])
    return _Batch(
        rows=len(frame),
        copy_data=data,
        devices=columns,
        last_ts=[
            from_epoch_us(t) if c else None
            for t, c in zip(newest.tolist(), per_device.tolist(), strict=True)
        ],
        counts=per_device.tolist(),
        received_us=received,
    )


def _dead_arrays(dead: Sequence[DeadLetterRecord | DeadLetter]) -> list[list[Any]]:
    """Column arrays of the dead letters, the same (topic, payload) merged into one row."""
    merged: dict[tuple[str, bytes], list[Any]] = {}
    for item in dead:
        d = DeadLetter.from_record(item) if isinstance(item, DeadLetterRecord) else item
        sha = d.payload_sha256
        # Escaped and cut here too, whoever made the dead letter: PostgreSQL refuses NUL and
        # lone surrogates, and the (topic, sha) index refuses entries above ~2.7 kB.
        topic = safe_text(d.mqtt_topic)[:MAX_DEAD_TOPIC_CHARS]
        row = merged.get((topic, sha))
        if row is None:
            merged[(topic, sha)] = [
                topic,
                None if d.device_id is None else safe_text(d.device_id),
                safe_text(d.reason),
                safe_text(d.detail),
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


async def _stream(data: bytes) -> AsyncIterator[bytes]:
    """COPY data as the async source asyncpg takes (plain bytes would be a file name)."""
    yield data


async def _copy_new_rows(conn: asyncpg.Connection | PoolConnectionProxy, data: bytes) -> bool:
    """COPY the rows straight into ``readings`` in a savepoint; False (nothing kept) when any
    of them is already stored or repeated in the batch.

    """
    try:
        async with conn.transaction():
            await conn.copy_to_table(
                "readings", source=_stream(data), columns=COPY_COLUMNS, format="binary"
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


class ReadingStore:
    """Stores batches of readings and dead letters in PostgreSQL / TimescaleDB.

    Use as an async context manager (or call :meth:`start` and :meth:`close`). Every
    database error is translated in :func:`~adapters.pgerrors.pg_errors`.

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
        batches: Sequence[ReadingBatch],
        dead: Sequence[DeadLetterRecord | DeadLetter] = (),
    ) -> WriteResult:
        """Store readings and dead letters atomically (see the module docstring for the steps).

        A record the database cannot store is quarantined as a dead letter instead (see the
        module docstring); bad data never raises from here.

        Args:
            batches: accepted messages from the readings topic (a
                :class:`~processors.storage.KafkaBatches` names their Kafka records).
            dead: dead letters (bridge rejects, or records the processor could not decode).

        Returns:
            How many readings were inserted, how many were already stored, how many
            dead-letter deliveries were recorded and how many records were quarantined.

        Raises:
            StorageBackpressure: connection lost or refused, too many connections, timeout:
                nothing was stored; retry later.
            FatalError: the database refused the schema (a missing table, refused
                credentials); chained.
        """
        pool = self._require_pool()
        origins: Sequence[ConsumedRecord | None] = (
            batches.records if isinstance(batches, KafkaBatches) else [None] * len(batches)
        )
        keep, keep_origins, quarantine = _screen(batches, origins)
        try:
            tally = await self._write_atomic(pool, keep, dead)
        except _Refused as exc:
            log.warning(
                "database refused a write: storing it in parts to find the records",
                error=exc.why[:_LOG_CHARS],
                batches=len(keep),
                dead_letters=len(dead),
            )
            units: list[_Unit] = [*zip(keep, keep_origins, strict=True), *((d, None) for d in dead)]
            tally, more = await self._salvage(pool, units)
            quarantine.extend(more)
        if quarantine:
            tally = tally.plus(await self._store_quarantine(pool, quarantine))
        return tally

    async def _write_atomic(
        self,
        pool: asyncpg.Pool,
        batches: Sequence[ReadingBatch],
        dead: Sequence[DeadLetterRecord | DeadLetter],
    ) -> WriteResult:
        """One transaction of readings and dead letters (the module docstring's steps 1-5).

        Raises:
            _Refused: the database (or asyncpg's encoder, or a time no datetime holds)
                refused the data.
        """
        try:
            laid = _layout(batches) if batches else None
        except (ValueError, OverflowError) as exc:  # text or times _screen did not foresee
            raise _Refused(f"{type(exc).__name__}: {exc}") from exc
        rows = laid.rows if laid is not None else 0
        dead_cols = _dead_arrays(dead) if dead else None
        inserted = 0
        latencies: tuple[float, ...] = ()
        with pg_errors("write batch", retry_after=self._retry_after_s):
            try:
                async with (
                    asyncio.timeout(self._cfg.command_timeout_s + CONNECT_TIMEOUT_S),
                    pool.acquire() as conn,
                    conn.transaction(),
                ):
                    fast = (
                        rows > 0 and laid is not None and await _copy_new_rows(conn, laid.copy_data)
                    )
                    if fast and laid is not None:
                        await conn.execute(
                            _UPSERT_DEVICES, *laid.devices, laid.last_ts, laid.counts
                        )
                        inserted = rows
                        now_us = epoch_us(datetime.now(UTC))
                        latencies = tuple(((now_us - laid.received_us) / 1e6).tolist())
                    elif laid is not None:
                        if rows:
                            await conn.copy_to_table(
                                _STAGE,
                                source=_stream(laid.copy_data),
                                columns=COPY_COLUMNS,
                                format="binary",
                            )
                        result = await conn.fetchrow(_INSERT_READINGS, *laid.devices)
                        assert result is not None
                        inserted = int(result["inserted"])
                        latencies = tuple(result["latencies"] or ())
                    if dead_cols is not None:
                        await conn.execute(_UPSERT_DEAD, *dead_cols)
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if _is_data_error(exc):
                    raise _Refused(f"{type(exc).__name__}: {exc}") from exc
                raise
        return WriteResult(
            inserted=inserted,
            duplicates=rows - inserted,
            dead_letters=len(dead),
            latencies_s=latencies,
        )

    async def _salvage(
        self, pool: asyncpg.Pool, units: Sequence[_Unit]
    ) -> tuple[WriteResult, list[DeadLetter]]:
        """Write ``units`` in halves, each its own transaction, down to the refused records.

        Returns:
            What was stored, and a quarantine dead letter for every record refused alone.
        """
        tally = WriteResult(0, 0, 0)
        refused: list[DeadLetter] = []
        pending = [list(units)]
        while pending:
            part = pending.pop()
            part_batches = [u for u, _ in part if isinstance(u, ReadingBatch)]
            part_dead = [u for u, _ in part if not isinstance(u, ReadingBatch)]
            try:
                tally = tally.plus(await self._write_atomic(pool, part_batches, part_dead))
            except _Refused as exc:
                if len(part) == 1:
                    item, origin = part[0]
                    refused.append(_quarantine_letter(item, origin, exc.why))
                    continue
                mid = len(part) // 2
                pending.extend((part[mid:], part[:mid]))  # the first half is written first
        return tally, refused

    async def _store_quarantine(
        self, pool: asyncpg.Pool, letters: Sequence[DeadLetter]
    ) -> WriteResult:
        """Store quarantine dead letters; one the database refuses even so is logged, dropped."""
        for letter in letters:
            log.error(
                "record quarantined: the database cannot store it",
                topic=letter.mqtt_topic,
                device_id=letter.device_id,
                detail=letter.detail[:_LOG_CHARS],
            )
        stored, dropped = await self._salvage(pool, [(d, None) for d in letters])
        for letter in dropped:
            log.error(
                "quarantine dead letter refused too: dropped", detail=letter.detail[:_LOG_CHARS]
            )
        return WriteResult(
            inserted=stored.inserted,
            duplicates=stored.duplicates,
            dead_letters=stored.dead_letters,
            quarantined=len(letters),
        )


class _Refused(Exception):
    """The database (or asyncpg's encoder) refused the data of a write, not the connection."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


# One record of a write: a readings batch or a dead letter, and the Kafka record it came from.
_Unit = tuple[ReadingBatch | DeadLetterRecord | DeadLetter, ConsumedRecord | None]


def _is_data_error(exc: BaseException) -> bool:
    """Is this a refusal of the data (quarantine it), not of the connection or schema?"""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _DATA_SQLSTATE_CLASSES
    # asyncpg's client-side DataError ("invalid input for query argument", e.g. a string
    # that cannot be encoded) is both an InterfaceError and a ValueError.
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


# Header JSON -> may its text be stored as it is. Headers repeat per device, so the check runs
# once per header; the dict is emptied when it reaches HEADER_CHECK_CACHE entries.
HEADER_CHECK_CACHE = 65_536
_header_checked: dict[bytes, bool] = {}


def _header_storable(batch: ReadingBatch) -> bool:
    """Can every text of this batch's header go into PostgreSQL as it is?"""
    known = _header_checked.get(batch.header_json)
    if known is not None:
        return known
    h = batch.header
    texts = (h.device_id, h.network, h.site, h.device, h.mqtt_topic, *h.metrics)
    ok = all(safe_text(t) == t for t in texts)
    if len(_header_checked) >= HEADER_CHECK_CACHE:
        _header_checked.clear()
    _header_checked[batch.header_json] = ok
    return ok


def _times_storable(ts_us: Int64Array, received_us: Int64Array) -> bool:
    """Do all these times fit a datetime? (one numpy pass over the whole write)"""
    lo = min(int(received_us.min()), int(ts_us.min()) if len(ts_us) else _MIN_STORABLE_US)
    hi = max(int(received_us.max()), int(ts_us.max()) if len(ts_us) else _MAX_STORABLE_US)
    return lo >= _MIN_STORABLE_US and hi <= _MAX_STORABLE_US


def _screen(
    batches: Sequence[ReadingBatch], origins: Sequence[ConsumedRecord | None]
) -> tuple[Sequence[ReadingBatch], Sequence[ConsumedRecord | None], list[DeadLetter]]:
    """Split off the batches whose header text cannot be stored (quarantine step 1).

    Times are checked over the whole write in :func:`_layout`; a write with a bad one is
    split down to it like any other refused write.
    """
    checked = _header_checked
    bad = [
        i for i, b in enumerate(batches) if not (checked.get(b.header_json) or _header_storable(b))
    ]
    if not bad:
        return batches, origins, []
    why = "header text holds NUL or a lone surrogate"
    out = [_quarantine_letter(batches[i], origins[i], why) for i in bad]
    skip = set(bad)
    keep = [i for i in range(len(batches)) if i not in skip]
    return [batches[i] for i in keep], [origins[i] for i in keep], out


def _quarantine_letter(
    item: ReadingBatch | DeadLetterRecord | DeadLetter, origin: ConsumedRecord | None, why: str
) -> DeadLetter:
    """The dead letter that keeps a record the database cannot store, with where it was."""
    if isinstance(item, DeadLetterRecord):
        item = DeadLetter.from_record(item)
    if isinstance(item, DeadLetter):
        origin = origin or item.origin
        device_id = item.device_id
        payload = item.payload
    else:
        device_id = item.header.device_id
        payload = origin.value if origin is not None and origin.value is not None else b""
        payload = payload or item.encode()
    if origin is not None:
        topic = f"{KAFKA_TOPIC_PREFIX}{origin.topic}"
        where = f"partition {origin.partition} offset {origin.offset}"
    else:
        topic, where = f"{KAFKA_TOPIC_PREFIX}?", "kafka position unknown"
    return DeadLetter(
        mqtt_topic=safe_text(topic)[:MAX_DEAD_TOPIC_CHARS],
        device_id=None if device_id is None else safe_text(device_id)[:_DEVICE_ID_CHARS],
        reason=QUARANTINE_REASON,
        detail=safe_text(f"{where}: the database cannot store it: {why}")[
            :_QUARANTINE_DETAIL_CHARS
        ],
        payload=payload,
        received_at=datetime.now(UTC),
        origin=origin,
    )
