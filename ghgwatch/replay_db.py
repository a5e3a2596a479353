"""Stored readings as a replay input: ``ghgwatch replay --from-db`` (the live database).

The readings of a device set and time range are written, in time order, as the long CSV
:func:`processors.replay.replay_csv` reads (``time,device_id,metric,value,flag,kind,location``,
kind and location from ``devices``), streaming through a server-side cursor.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from core.settings import Settings

__all__ = ["REPLAY_COLUMNS", "readings_to_replay_csv"]

REPLAY_COLUMNS = ("time", "device_id", "metric", "value", "flag", "kind", "location")
_PAGE = 5000
_SQL = """
SELECT r.ts, r.device_id, r.metric, r.value, r.flag, d.kind, coalesce(d.location, '')
FROM readings r JOIN devices d USING (device_id)
WHERE r.ts >= $1 AND r.ts < $2 {devices}
ORDER BY r.ts, r.device_id, r.metric
"""


async def readings_to_replay_csv(
    settings: Settings,
    out: Path,
    *,
    devices: Sequence[str],
    since: datetime,
    until: datetime,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the stored readings of ``devices`` (all when empty) in [since, until) to ``out``.

    Returns:
        The readings written.
    """
    sql = _SQL.format(devices="AND r.device_id = ANY($3::text[])" if devices else "")
    args: list[object] = [since, until] + ([list(devices)] if devices else [])
    written = 0
    conn = await asyncpg.connect(settings.db_url())
    try:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            with out.open("w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(REPLAY_COLUMNS)
                while page := await cursor.fetch(_PAGE):
                    w.writerows(
                        (r[0].astimezone(UTC).isoformat(), r[1], r[2], repr(r[3]), r[4], r[5], r[6])
                        for r in page
                    )
                    written += len(page)
                    if progress is not None:
                        progress(written)
    finally:
        await conn.close()
    return written
