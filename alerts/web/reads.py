"""The console's read queries beyond the alerts themselves: sources, dead letters, detections,
the readings around an alert and the quarterly reports.

These tables belong to other packages (storage: ``devices``, ``readings``, ``dead_letters``;
detection: ``detections``; reports: ``reports``); the console only reads them, by the column
names their migrations promise to keep. ``reports`` may not exist yet: then there are none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from alerts.models import AlertView
from alerts.pg import AlertDb

__all__ = [
    "DeadLetterSummary",
    "DetectionRow",
    "Overview",
    "ReadingSeries",
    "SourceGroup",
    "WebReads",
]

DEAD_LETTERS_SHOWN = 5
DETECTIONS_SHOWN = 200
READINGS_MAX = 5000
BEFORE_ALERT = timedelta(minutes=30)
AFTER_ALERT = timedelta(minutes=10)
_REPORT_ORDER = ("created_at", "generated_at", "quarter", "report_id", "id")


@dataclass(frozen=True, slots=True)
class SourceGroup:
    """Sources of one kind in one network (the network names the region, e.g. Ordos)."""

    kind: str
    network: str
    sources: int
    flowing: int
    last_seen: datetime | None

    @property
    def silent(self) -> int:
        """Sources that sent nothing within the freshness window."""
        return self.sources - self.flowing


@dataclass(frozen=True, slots=True)
class DeadLetterSummary:
    """Rejected messages: how many distinct, how many deliveries, the latest few."""

    distinct: int
    deliveries: int
    latest: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DetectionRow:
    """One detection for the time line."""

    detection_id: str
    device_id: str
    detector: str
    severity: str
    started_at: datetime
    ended_at: datetime | None
    value: float


@dataclass(frozen=True, slots=True)
class Overview:
    """What the console's first page shows."""

    at: datetime
    sources: list[SourceGroup]
    dead_letters: DeadLetterSummary
    detections: list[DetectionRow]
    since: datetime


@dataclass(frozen=True, slots=True)
class ReadingSeries:
    """An alert's metric on its device around the alert: times (Unix s) and values."""

    device_id: str
    metric: str
    ts: list[float]
    values: list[float]
    threshold: float | None
    started_at: datetime


class WebReads:
    """Read-only queries of the console over the alert store's pool.

    Args:
        db: the open alert database.
    """

    def __init__(self, db: AlertDb) -> None:
        self._db = db

    async def overview(self, now: datetime, fresh_s: float, window: timedelta) -> Overview:
        """Sources per kind and network with how many sent data within ``fresh_s``, the dead
        letters, and the detections that started within ``window`` before ``now``."""
        since = now - window
        async with self._db.tx("console overview") as conn:
            groups = await conn.fetch(
                """
                SELECT kind, network, count(*) AS sources, max(last_seen) AS last_seen,
                    count(*) FILTER (WHERE last_seen >= $1) AS flowing
                FROM devices GROUP BY kind, network ORDER BY kind, network
                """,
                now - timedelta(seconds=fresh_s),
            )
            dead = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(sum(occurrences), 0) AS d FROM dead_letters"
            )
            latest = await conn.fetch(
                """
                SELECT reason, mqtt_topic, device_id, last_received_at, occurrences
                FROM dead_letters ORDER BY last_received_at DESC LIMIT $1
                """,
                DEAD_LETTERS_SHOWN,
            )
            dets = await conn.fetch(
                """
                SELECT detection_id, device_id, detector, severity, started_at, ended_at, value
                FROM detections WHERE started_at >= $1 OR ended_at IS NULL
                ORDER BY started_at DESC LIMIT $2
                """,
                since,
                DETECTIONS_SHOWN,
            )
        assert dead is not None
        return Overview(
            at=now,
            sources=[SourceGroup(**dict(g)) for g in groups],
            dead_letters=DeadLetterSummary(
                distinct=int(dead["n"]), deliveries=int(dead["d"]), latest=[dict(r) for r in latest]
            ),
            detections=[DetectionRow(**dict(d)) for d in dets],
            since=since,
        )

    async def readings_around(self, alert: AlertView, now: datetime) -> ReadingSeries:
        """The alert's metric on its device from 30 min before it started to 10 min after it
        was last seen (or resolved), at most :data:`READINGS_MAX` points."""
        end = min((alert.resolved_at or alert.last_seen_at) + AFTER_ALERT, now)
        async with self._db.tx("console readings") as conn:
            rows = await conn.fetch(
                """
                SELECT extract(epoch FROM ts)::float8 AS t, value FROM readings
                WHERE device_id = $1 AND metric = $2 AND ts >= $3 AND ts <= $4
                ORDER BY ts LIMIT $5
                """,
                alert.device_id,
                alert.metric,
                alert.started_at - BEFORE_ALERT,
                max(end, alert.started_at),
                READINGS_MAX,
            )
        return ReadingSeries(
            device_id=alert.device_id,
            metric=alert.metric,
            ts=[float(r["t"]) for r in rows],
            values=[float(r["value"]) for r in rows],
            threshold=alert.threshold,
            started_at=alert.started_at,
        )

    async def reports(self, limit: int = 20) -> list[dict[str, Any]] | None:
        """The newest quarterly reports as plain rows; None while no ``reports`` table exists."""
        async with self._db.tx("console reports") as conn:
            if await conn.fetchval("SELECT to_regclass('reports')") is None:
                return None
            columns = {
                r["attname"]
                for r in await conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'reports'::regclass"
                    " AND attnum > 0 AND NOT attisdropped"
                )
            }
            # Newest first by the first of these the table has (the reports branch owns it).
            order = next((c for c in _REPORT_ORDER if c in columns), None)
            by = f'"{order}" DESC' if order else "1"
            rows = await conn.fetch(
                f"SELECT to_jsonb(r)::text AS row FROM reports r ORDER BY {by} LIMIT $1",  # noqa: S608
                limit,
            )
        return [json.loads(r["row"]) for r in rows]
