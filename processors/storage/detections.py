"""The detection writer: the detector's detections and derived series, one transaction a batch.

One :meth:`DetectionStore.write` call is one transaction:

1. Upsert ``detections`` on ``detection_id``: an OPEN record inserts the row (a repeat,
   after a redelivery or a restart's warm-up, changes nothing); a CLEARED record sets the
   row's state and ``ended_at``.
2. Insert the derived series points; points already stored (same time, device, series) are
   skipped, so a re-processed batch stores each point once.
3. Commit. The caller produces the detection records to Kafka and commits offsets only after.

:meth:`DetectionStore.open_detections` reads the stored open episodes of some streams, so
a restarted detector continues them instead of orphaning them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from adapters.pgerrors import pg_errors
from core.settings import DbSettings
from processors.detection import DerivedTable
from wire.events import DetectionRecord, DetectionState, Severity

__all__ = ["RESTART_CLOSED", "RESTART_DUPLICATE", "DetectionStore"]

CONNECT_TIMEOUT_S = 10.0
# One writer, one transaction at a time: a second connection only covers a reconnect.
_POOL_MAX = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Evidence keys (value 1.0) of the clears a restarted detector writes for stored open
# detections: its rebuilt state has the episode closed / a second open one of it.
RESTART_CLOSED = "restart_closed"
RESTART_DUPLICATE = "restart_duplicate"
_RESTART_REASONS = [RESTART_CLOSED, RESTART_DUPLICATE]

_UPSERT_DETECTION = """
INSERT INTO detections (detection_id, state, device_id, kind, network, site, metric, detector,
                        severity, location, started_at, ended_at, score, value, threshold,
                        evidence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb)
ON CONFLICT (detection_id) DO UPDATE
SET state = EXCLUDED.state, ended_at = EXCLUDED.ended_at,
    -- a clear a restart wrote keeps its reason with the row (RESTART_REASONS)
    evidence = CASE WHEN EXCLUDED.evidence ?| $17::text[]
                    THEN detections.evidence || EXCLUDED.evidence
                    ELSE detections.evidence END
WHERE EXCLUDED.state = 'cleared'
"""
_OPEN_DETECTIONS = """
SELECT d.* FROM detections d
JOIN unnest($1::text[], $2::text[]) AS s(device_id, metric)
  ON d.device_id = s.device_id AND d.metric = s.metric
WHERE d.state = 'open'
ORDER BY d.started_at, d.detection_id
"""
_INSERT_DERIVED = """
INSERT INTO derived (ts, device_id, series, value, valid)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::bool[])
ON CONFLICT DO NOTHING
"""


class DetectionStore:
    """Stores the detector's outputs in PostgreSQL; use as an async context manager.

    Every database error is translated in :func:`~adapters.pgerrors.pg_errors`.

    Args:
        dsn: the PostgreSQL URL.
        cfg: the ``db`` settings section (command timeout).
    """

    def __init__(self, dsn: str, cfg: DbSettings) -> None:
        self._dsn = dsn
        self._cfg = cfg
        self._pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> DetectionStore:
        """Open the connection pool.

        Raises:
            FatalError: the credentials were refused.
            StorageBackpressure: the database cannot be reached right now.
        """
        if self._pool is not None:
            raise RuntimeError("DetectionStore already started")
        with pg_errors("connect"):
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=_POOL_MAX,
                command_timeout=self._cfg.command_timeout_s,
                timeout=CONNECT_TIMEOUT_S,
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the pool (waiting at most ``CONNECT_TIMEOUT_S``)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with pg_errors("close"):
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await pool.close()

    async def open_detections(self, streams: Sequence[tuple[str, str]]) -> list[DetectionRecord]:
        """The detections stored open for some streams, oldest first.

        Args:
            streams: (device_id, metric) pairs.

        Raises:
            StorageBackpressure: the database is unreachable or slow (retry).
            FatalError: the schema is missing.
        """
        if self._pool is None:
            raise RuntimeError("DetectionStore is not started")
        if not streams:
            return []
        devices = [d for d, _ in streams]
        metrics = [m for _, m in streams]
        with pg_errors("read open detections"):
            async with asyncio.timeout(self._cfg.command_timeout_s):
                async with self._pool.acquire() as conn:
                    rows = await conn.fetch(_OPEN_DETECTIONS, devices, metrics)
        return [
            DetectionRecord(
                detection_id=r["detection_id"], state=DetectionState.OPEN,
                device_id=r["device_id"], kind=r["kind"], network=r["network"], site=r["site"],
                metric=r["metric"], detector=r["detector"], severity=Severity(r["severity"]),
                started_at=r["started_at"], score=r["score"], value=r["value"],
                threshold=r["threshold"], location=r["location"],
                evidence=json.loads(r["evidence"]) if r["evidence"] else {},
            )
            for r in rows
        ]  # fmt: skip

    async def write(self, records: Sequence[DetectionRecord], derived: DerivedTable) -> None:
        """Store detections and derived points atomically (see the module docstring).

        Raises:
            StorageBackpressure: the database is unreachable or slow (retry the same).
            FatalError: the database refused the data or the schema is missing.
        """
        if self._pool is None:
            raise RuntimeError("DetectionStore is not started")
        rows = [
            (
                r.detection_id, r.state.value, r.device_id, r.kind, r.network, r.site,
                r.metric, r.detector, r.severity.value, r.location, r.started_at, r.ended_at,
                r.score, r.value, r.threshold, json.dumps(r.evidence), _RESTART_REASONS,
            )
            for r in records
        ]  # fmt: skip
        with pg_errors("write detections"):
            async with asyncio.timeout(self._cfg.command_timeout_s):
                async with self._pool.acquire() as conn, conn.transaction():
                    if rows:
                        await conn.executemany(_UPSERT_DETECTION, rows)
                    if len(derived):
                        ts = [
                            _EPOCH + timedelta(microseconds=t // 1000)
                            for t in derived.ts_ns.tolist()
                        ]
                        value = [None if not np.isfinite(v) else v for v in derived.value.tolist()]
                        await conn.execute(
                            _INSERT_DERIVED, ts, derived.device_id, derived.series, value,
                            derived.valid.tolist(),
                        )  # fmt: skip
