"""Adapter for ``ghgwatch status``: read-only database queries and Kafka offset look-ups.

The only ghgwatch-shell module that imports asyncpg and aiokafka; their errors are mapped onto
:mod:`core.errors` here (``raise ... from exc``), once per driver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.errors import BrokerUnavailable, StorageBackpressure

__all__ = [
    "PROBE_TIMEOUT_S",
    "DbSnapshot",
    "PartitionOffsets",
    "fetch_db_snapshot",
    "fetch_group_offsets",
]

PROBE_TIMEOUT_S = 10.0
RETRY_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class DbSnapshot:
    """Rows the status report is built from (plain dicts, one per result row)."""

    kinds: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    devices_total: int
    dead_letters: list[dict[str, Any]]
    readings_total: int
    newest_reading: datetime | None


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """The end offset of one partition and the group's committed offset (None: none yet)."""

    topic: str
    partition: int
    end_offset: int
    committed: int | None


@contextlib.contextmanager
def _db_errors(where: str) -> Iterator[None]:
    try:
        yield
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageBackpressure(
            f"database at {where} unreachable or failing: {type(exc).__name__}: {exc}",
            retry_after=RETRY_AFTER_S,
        ) from exc


@contextlib.contextmanager
def _kafka_errors(where: str) -> Iterator[None]:
    try:
        yield
    except (OSError, TimeoutError, KafkaError) as exc:
        raise BrokerUnavailable(
            f"kafka at {where} unreachable or failing: {type(exc).__name__}: {exc}",
            retry_after=RETRY_AFTER_S,
        ) from exc


_KINDS_SQL = """
SELECT kind, count(*) AS devices, coalesce(sum(readings_count), 0)::bigint AS readings,
       max(last_seen) AS last_seen
FROM devices GROUP BY kind ORDER BY kind
"""
_DEVICES_SQL = """
SELECT device_id, kind, last_seen, readings_count AS readings
FROM devices ORDER BY last_seen DESC NULLS LAST, device_id LIMIT $1
"""
_DEAD_SQL = """
SELECT reason, count(*) AS count, coalesce(sum(occurrences), 0)::bigint AS occurrences,
       max(last_received_at) AS last_at,
       (array_agg(detail ORDER BY last_received_at DESC))[1] AS example_detail,
       (array_agg(device_id ORDER BY last_received_at DESC))[1] AS example_device
FROM dead_letters GROUP BY reason ORDER BY count(*) DESC, reason
"""


async def fetch_db_snapshot(db_url: str, *, device_limit: int) -> DbSnapshot:
    """Read device, reading and dead-letter summaries from the ghgwatch database.

    Args:
        db_url: PostgreSQL URL of a migrated ghgwatch database.
        device_limit: at most this many devices, most recently seen first.

    Raises:
        StorageBackpressure: the database is unreachable, timed out or not migrated.
    """
    host = db_url.rpartition("@")[2]
    with _db_errors(host):
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            conn = await asyncpg.connect(db_url)
            try:
                async with conn.transaction(readonly=True):
                    kinds = await conn.fetch(_KINDS_SQL)
                    devices = await conn.fetch(_DEVICES_SQL, device_limit)
                    total = await conn.fetchval("SELECT count(*) FROM devices")
                    dead = await conn.fetch(_DEAD_SQL)
            finally:
                await conn.close()
    return DbSnapshot(
        kinds=[dict(r) for r in kinds],
        devices=[dict(r) for r in devices],
        devices_total=int(total),
        dead_letters=[dict(r) for r in dead],
        readings_total=sum(int(r["readings"]) for r in kinds),
        newest_reading=max((r["last_seen"] for r in kinds if r["last_seen"]), default=None),
    )


@contextlib.asynccontextmanager
async def _started(client: Any) -> AsyncIterator[Any]:
    close = client.close if isinstance(client, AIOKafkaAdminClient) else client.stop
    try:
        await client.start()
        # aiokafka's group-less consumer starts a background task at start(); stopping before
        # that task first runs makes stop() raise CancelledError. One loop turn lets it start.
        await asyncio.sleep(0)
    except BaseException:
        # A client whose start failed still holds sockets and tasks: close it, keep the error.
        with contextlib.suppress(Exception):
            await close()
        raise
    try:
        yield client
    finally:
        await close()


async def fetch_group_offsets(
    bootstrap: str, topic: str, group_id: str, client_options: dict[str, Any] | None = None
) -> list[PartitionOffsets]:
    """End offsets of every partition of ``topic`` and ``group_id``'s committed offsets.

    Uses ListOffsets and OffsetFetch only (no offsets_for_times), which tansu supports.

    Args:
        bootstrap: Kafka bootstrap servers.
        topic: the topic to inspect (the readings topic).
        group_id: the consumer group whose progress is measured.
        client_options: extra aiokafka options (security settings).

    Returns:
        One entry per partition, sorted by partition; empty when the topic does not exist.

    Raises:
        BrokerUnavailable: the cluster is unreachable or timed out.
    """
    opts = {"bootstrap_servers": bootstrap, **(client_options or {})}
    with _kafka_errors(bootstrap):
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            consumer = AIOKafkaConsumer(enable_auto_commit=False, **opts)
            async with _started(consumer):
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    return []
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                ends = await consumer.end_offsets(tps)
            admin = AIOKafkaAdminClient(**opts)
            async with _started(admin):
                committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    out: list[PartitionOffsets] = []
    for tp in tps:
        meta = committed.get(tp)
        offset = None if meta is None or meta.offset < 0 else int(meta.offset)
        out.append(PartitionOffsets(topic, tp.partition, int(ends[tp]), offset))
    return out
