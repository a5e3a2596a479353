"""Reads of CEMS unit-hours for the quarterly accounting: the one place with their SQL.

Rows come from the ``cems_unit_1h`` view (migration 300) for a time range, so a report's cost
grows with units × hours, not with raw readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import numpy as np
import numpy.typing as npt

__all__ = ["HourRows", "MonthRates", "read_hours", "read_month_rates"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class HourRows:
    """Stored unit-hours, one entry per row, columns as arrays.

    Attributes:
        devices: the distinct units, sorted; ``unit`` indexes into it.
        unit: per row, the unit index.
        epoch_h: per row, the hour's start in hours since the Unix epoch (UTC).
        valid: per row, HJ 75 valid hour.
        rate_t_h: per row, mean mass rate over the valid minutes (NaN when none).
        load_mw: per row, mean load over the valid minutes (NaN when none).
        site_pressure_minutes: per row, valid minutes computed with a configured pressure.
    """

    devices: list[str]
    unit: I64
    epoch_h: I64
    valid: npt.NDArray[np.bool_]
    rate_t_h: F64
    load_mw: F64
    site_pressure_minutes: F64


async def read_hours(conn: asyncpg.Connection, start: datetime, end: datetime) -> HourRows:
    """Every stored unit-hour in ``[start, end)``.

    Args:
        conn: an open connection.
        start: first instant (aware).
        end: first instant after (aware).

    Returns:
        The rows as arrays.
    """
    rows = await conn.fetch(
        "SELECT device_id, (extract(epoch FROM bucket)::bigint / 3600) AS h, valid,"
        " co2_t_h, load_mw, site_pressure_minutes"
        " FROM cems_unit_1h WHERE bucket >= $1 AND bucket < $2",
        start,
        end,
    )
    names = [r["device_id"] for r in rows]
    devices = sorted(set(names))
    index = {d: i for i, d in enumerate(devices)}

    def col(key: str) -> F64:
        return np.asarray([np.nan if r[key] is None else r[key] for r in rows], np.float64)

    return HourRows(
        devices=devices,
        unit=np.asarray([index[n] for n in names], np.int64),
        epoch_h=np.asarray([r["h"] for r in rows], np.int64),
        valid=np.asarray([bool(r["valid"]) for r in rows], bool),
        rate_t_h=col("co2_t_h"),
        load_mw=col("load_mw"),
        site_pressure_minutes=col("site_pressure_minutes"),
    )


@dataclass(frozen=True, slots=True)
class MonthRates:
    """Per unit and local calendar month: mean valid-hour mass rate and valid hours."""

    rate_t_h: dict[tuple[str, int], float]
    valid_hours: dict[tuple[str, int], int]


async def read_month_rates(
    conn: asyncpg.Connection, start: datetime, end: datetime, tz: str
) -> MonthRates:
    """Mean valid-hour rate per unit and month (1-12) in ``[start, end)``: a seasonal shape.

    Args:
        conn: an open connection.
        start: first instant (aware), a month start in ``tz``.
        end: first instant after (aware).
        tz: the report's time zone (months are local calendar months).

    Returns:
        The monthly rates keyed by (device, month).
    """
    rows = await conn.fetch(
        "SELECT device_id, extract(month FROM bucket AT TIME ZONE $3)::int AS m,"
        " avg(co2_t_h) FILTER (WHERE valid) AS rate, count(*) FILTER (WHERE valid) AS n"
        " FROM cems_unit_1h WHERE bucket >= $1 AND bucket < $2 GROUP BY 1, 2",
        start,
        end,
        tz,
    )
    rate = {(r["device_id"], r["m"]): float(r["rate"]) for r in rows if r["rate"] is not None}
    hours = {(r["device_id"], r["m"]): int(r["n"]) for r in rows}
    return MonthRates(rate, hours)
