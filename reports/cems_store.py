"""Reads of CEMS unit-hours for the quarterly accounting: the one place with their SQL.

Rows are the detection engine's hourly derived series for a time range (one point per unit,
hour and series; the same rows the ``cems_unit_1h`` view of migration 300 pivots for
dashboards), so a report's cost grows with units × hours, not with raw readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import numpy as np
import numpy.typing as npt

__all__ = ["HourRows", "MonthRates", "read_hours", "read_month_rates", "units_stored_before"]

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
        stopped_minutes: per row, minutes with readings flagged F (the unit stopped).
    """

    devices: list[str]
    unit: I64
    epoch_h: I64
    valid: npt.NDArray[np.bool_]
    rate_t_h: F64
    load_mw: F64
    site_pressure_minutes: F64
    stopped_minutes: F64


# PostgreSQL binary COPY: 19-byte header (signature, flags, extension length), per row a
# field count and each field as length + big-endian value, a 2-byte trailer. Every column is
# fixed-width and never NULL (coalesced), so the rows map straight onto a numpy dtype.
_COPY_HEADER = 19
_COPY_TRAILER = 2
_ROW = np.dtype(
    [
        ("nfields", ">i2"),
        ("l_unit", ">i4"), ("unit", ">i4"),
        ("l_ts", ">i4"), ("ts_us", ">i8"),
        ("l_valid", ">i4"), ("valid", "?"),
        ("l_value", ">i4"), ("value", ">f8"),
    ]
)  # fmt: skip
_DEVICES_SQL = (
    "SELECT DISTINCT device_id FROM derived"
    " WHERE series = 'co2_mass_t_h_1h' AND ts >= $1 AND ts < $2 ORDER BY 1"
)
# One series at a time straight from derived's (series, ts) index: pivoting all four in SQL
# (the cems_unit_1h view) sorts and groups every point and costs 20 times as much.
_SERIES_SQL = (
    "SELECT (u.i - 1)::int4, d.ts, d.valid,"
    " coalesce(d.value, 'NaN')::float8"
    " FROM derived d JOIN unnest($3::text[]) WITH ORDINALITY AS u(device_id, i)"
    " ON u.device_id = d.device_id"
    " WHERE d.series = $4 AND d.ts >= $1 AND d.ts < $2"
)
_RATE, _LOAD, _SITE_P = "co2_mass_t_h_1h", "load_mw_1h", "site_pressure_minutes_1h"
_STOPPED = "stopped_minutes_1h"  # stored only for hours with any (processors.detection.cems)
_KEY_SHIFT = 32
# timestamptz in binary COPY: microseconds since 2000-01-01 00:00 UTC, i.e. this many hours
# after the Unix epoch
_PG_EPOCH_H = 946_684_800 // 3600
_US_PER_H = 3_600_000_000


async def _series(
    conn: asyncpg.Connection, start: datetime, end: datetime, devices: list[str], series: str
) -> npt.NDArray[np.void]:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(
        _SERIES_SQL, start, end, devices, series, output=sink, format="binary"
    )
    raw = b"".join(chunks)
    body = raw[_COPY_HEADER : len(raw) - _COPY_TRAILER]
    if len(body) % _ROW.itemsize:
        raise ValueError(f"unexpected binary COPY layout for derived series {series}")
    return np.frombuffer(body, _ROW)


def _hour(rec: npt.NDArray[np.void]) -> I64:
    """Hours since the Unix epoch of each row's (hour-aligned) timestamp."""
    return np.asarray(rec["ts_us"].astype(np.int64) // _US_PER_H + _PG_EPOCH_H, np.int64)


def _key(rec: npt.NDArray[np.void]) -> I64:
    return np.asarray((rec["unit"].astype(np.int64) << _KEY_SHIFT) | _hour(rec))


def _align(base_key: I64, rec: npt.NDArray[np.void], fill: float) -> F64:
    """The values of ``rec`` at ``base_key`` (sorted), ``fill`` where it has none."""
    out = np.full(base_key.shape[0], fill)
    if rec.shape[0] == 0 or base_key.shape[0] == 0:
        return out
    key = _key(rec)
    at = np.searchsorted(base_key, key)
    hit = at < base_key.shape[0]
    hit[hit] = base_key[at[hit]] == key[hit]
    out[at[hit]] = rec["value"][hit]
    return out


async def read_hours(
    conn: asyncpg.Connection, start: datetime, end: datetime, detail_start: datetime | None = None
) -> HourRows:
    """Every stored unit-hour in ``[start, end)``, read as binary COPY into numpy arrays.

    A unit-hour is a stored ``co2_mass_t_h_1h`` point; its load and site-pressure minutes
    are joined by (unit, hour) in numpy, and read only from ``detail_start`` on (the
    quarter: the year to date needs the mass rates alone), NaN and 0 before it; its stopped
    minutes (sparse: only hours with any are stored) over the whole range.

    Args:
        conn: an open connection.
        start: first instant (aware).
        end: first instant after (aware).
        detail_start: first instant of the load and site-pressure reads (default ``start``).

    Returns:
        The rows as arrays, sorted by unit and hour.
    """
    devices = [str(r[0]) for r in await conn.fetch(_DEVICES_SQL, start, end)]
    if not devices:
        empty = np.zeros(0, np.int64)
        none = np.zeros(0)
        return HourRows([], empty, empty, np.zeros(0, bool), none, none, none, none)
    rate = await _series(conn, start, end, devices, _RATE)
    order = np.argsort(_key(rate), kind="stable")
    rate = rate[order]
    base = _key(rate)
    d0 = start if detail_start is None else max(start, detail_start)
    load = _align(base, await _series(conn, d0, end, devices, _LOAD), np.nan)
    site_p = _align(base, await _series(conn, d0, end, devices, _SITE_P), 0.0)
    stopped = _align(base, await _series(conn, start, end, devices, _STOPPED), 0.0)
    return HourRows(
        devices=devices,
        unit=rate["unit"].astype(np.int64),
        epoch_h=_hour(rate),
        valid=rate["valid"].astype(bool),
        rate_t_h=rate["value"].astype(np.float64),
        load_mw=load,
        site_pressure_minutes=site_p,
        stopped_minutes=stopped,
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
        "SELECT device_id, extract(month FROM ts AT TIME ZONE $3)::int AS m,"
        " avg(value) AS rate, count(*) AS n FROM derived"
        " WHERE series = 'co2_mass_t_h_1h' AND valid AND ts >= $1 AND ts < $2 GROUP BY 1, 2",
        start,
        end,
        tz,
    )
    rate = {(r["device_id"], r["m"]): float(r["rate"]) for r in rows if r["rate"] is not None}
    hours = {(r["device_id"], r["m"]): int(r["n"]) for r in rows}
    return MonthRates(rate, hours)


async def units_stored_before(
    conn: asyncpg.Connection, devices: list[str], before: datetime
) -> set[str]:
    """The units of ``devices`` with a unit-hour stored before ``before`` (one index probe
    each on derived's primary key): their accounting does not start at their first hour read.
    """
    rows = await conn.fetch(
        "SELECT d.device_id FROM unnest($1::text[]) AS d(device_id) WHERE EXISTS ("
        " SELECT 1 FROM derived x WHERE x.device_id = d.device_id"
        " AND x.series = 'co2_mass_t_h_1h' AND x.ts < $2)",
        devices,
        before,
    )
    return {str(r[0]) for r in rows}
