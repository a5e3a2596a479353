"""Daily aggregates the quarterly report reads: ``readings_1d`` and ``derived_1d``.

The report never reads raw readings. :func:`refresh_daily` rolls the hourly aggregate
(``readings_1h``: a continuous aggregate under TimescaleDB, a view on plain PostgreSQL)
up into one row per device, metric and local day, and the detection service's derived
series (city enhancement) into ``derived_1d``. A refresh upserts the device-days it finds,
so running it again after late data arrived updates those days; it never deletes, so a
quarter whose raw readings were dropped by the retention policy keeps its daily rows.

An hour is *valid* when it holds at least ``reports.min_valid_readings_per_hour[kind]``
readings flagged N (CEMS: 45, the HJ 75 hourly rule on minute data; the other kinds: one);
``data_hours`` counts hours with any reading at all, so a sensor's silent hours are the
hours it was expected minus ``data_hours``.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = ["ENHANCEMENT_SERIES", "refresh_daily", "refresh_derived_daily"]

# The detection service's city enhancement series (processors.detection): CO2 above the
# station's rolling background.
ENHANCEMENT_SERIES = "co2_ppm_enhancement"

_DAILY_FROM_HOURLY = """
WITH need AS (
    SELECT * FROM unnest($4::text[], $5::int[]) AS t(kind, n)
), h AS (
    SELECT (r.bucket AT TIME ZONE $3)::date AS day, r.device_id, r.metric, r.count, r.n_all,
           r.avg, r.min, r.max, coalesce(need.n, 1) AS need
    FROM {source} r
    LEFT JOIN devices d USING (device_id)
    LEFT JOIN need ON need.kind = d.kind
    WHERE r.bucket >= $1 AND r.bucket < $2
)
INSERT INTO readings_1d (day, device_id, metric, n_valid, n_all, sum_valid, min, max,
                         data_hours, valid_hours)
SELECT day, device_id, metric, sum(count), sum(n_all), sum(avg * count), min(min), max(max),
       count(*) FILTER (WHERE n_all > 0), count(*) FILTER (WHERE count >= need)
FROM h
GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, day) DO UPDATE SET
    n_valid = EXCLUDED.n_valid, n_all = EXCLUDED.n_all, sum_valid = EXCLUDED.sum_valid,
    min = EXCLUDED.min, max = EXCLUDED.max, data_hours = EXCLUDED.data_hours,
    valid_hours = EXCLUDED.valid_hours
"""

_SOURCES = frozenset({"readings_1h"})


async def refresh_daily(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    tz: str,
    min_valid_per_hour: dict[str, int],
    *,
    source: str = "readings_1h",
) -> int:
    """Upsert ``readings_1d`` for the local days in ``[start, end)`` from an hourly aggregate.

    Args:
        conn: an open connection.
        start: first instant (a local midnight in ``tz``).
        end: first instant after the range (a local midnight).
        tz: the report's time zone (days are local days).
        min_valid_per_hour: per source kind, valid readings an hour needs.
        source: the hourly relation (``readings_1h``; the benchmark passes its own table of
            the same shape).

    Returns:
        The number of daily rows written.
    """
    if source not in _SOURCES and not source.startswith("bench_"):
        raise ValueError(f"unknown hourly source {source!r}")
    kinds = sorted(min_valid_per_hour)
    async with conn.transaction():
        status = await conn.execute(
            _DAILY_FROM_HOURLY.format(source=source),
            start,
            end,
            tz,
            kinds,
            [min_valid_per_hour[k] for k in kinds],
        )
    return int(status.rsplit(" ", 1)[-1])


async def refresh_derived_daily(
    conn: asyncpg.Connection, start: datetime, end: datetime, tz: str
) -> int:
    """Upsert ``derived_1d`` (city enhancement) for the local days in ``[start, end)``.

    Returns:
        The number of daily rows written.
    """
    async with conn.transaction():
        status = await conn.execute(
            """INSERT INTO derived_1d (day, device_id, series, n, sum)
               SELECT (ts AT TIME ZONE $3)::date, device_id, series, count(*), sum(value)
               FROM derived
               WHERE series = $4 AND valid AND value IS NOT NULL AND ts >= $1 AND ts < $2
               GROUP BY 1, 2, 3
               ON CONFLICT (device_id, series, day) DO UPDATE SET
                   n = EXCLUDED.n, sum = EXCLUDED.sum""",
            start,
            end,
            tz,
            ENHANCEMENT_SERIES,
        )
    return int(status.rsplit(" ", 1)[-1])
