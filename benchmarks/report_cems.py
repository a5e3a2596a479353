"""CEMS data for ``bench_report.py``: region-scale unit-hours and a 10-unit minute subset.

- :func:`region_hours` simulates the hourly series the detection engine stores per unit
  (``co2_mass_t_h_1h``, ``valid_minutes_1h``, ``load_mw_1h``, ``site_pressure_minutes_1h``,
  as ``tests/reports/cems_sim.py`` stores them) and :func:`copy_region` COPYs them into
  ``derived`` (binary COPY built in numpy); :func:`region_settings` configures their plants,
  regions, budgets, targets and (some) benchmark classes;
- :func:`subset_minutes` simulates the minute readings of the CEMS channels of a few units,
  :func:`copy_readings` stores them in ``readings``, :func:`run_engine` turns them into
  derived rows with the real :class:`processors.detection.DetectionEngine` (as
  ``tests/reports/test_plants_from_minutes.py`` does) and :func:`raw_figures` computes the
  quarter's tonnes and gross intensity straight from the raw rows (HJ 75 per minute with the
  :mod:`wire.cems` formulas, HJ 76 valid hours, HJ 75-2017 substitution through
  :func:`reports.accounting.account_hours`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np
import numpy.typing as npt

from core.settings import Settings
from processors.detection import DetectionEngine
from processors.detection.catalogue import CEMS_PARAMS
from reports.accounting import account_hours
from reports.model import Quarter
from reports.targets import plant_of, substitution_limits
from wire import (
    co2_dry_from_wet_pct,
    co2_mass_rate_t_h,
    dry_standard_flow_m3_h,
    pressure_at_altitude_pa,
)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

NS = 1_000_000_000
_PG_EPOCH_S = 946_684_800  # 2000-01-01 00:00 UTC, the binary COPY timestamp origin
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_TRAILER = b"\xff\xff"
REGIONS = ("Baotou", "Ordos", "Wuhai", "Hohhot", "Chifeng")
CLASSES = ("600mw_sc", "300mw_sc", "600mw_usc", "1000mw_usc", "300mw_subc")
ALTITUDES = (1050.0, 1450.0)
HOUR_SERIES = ("co2_mass_t_h_1h", "valid_minutes_1h", "load_mw_1h", "site_pressure_minutes_1h")
DERIVED_COLS = ["ts", "device_id", "series", "value", "valid"]
READING_COLS = ["ts", "device_id", "metric", "value", "flag", "received_at"]


def unit_id(i: int) -> str:
    """CEMS unit ``i``: four units a plant (``plant_of`` is ``plant-NN/site-NN``)."""
    return f"plant-{i // 4:02d}/site-{i // 4:02d}/unit-{i % 4}"


# -- binary COPY ----------------------------------------------------------------------------


def _block(fields: list[tuple[str, Any]], n: int) -> bytes:
    """``n`` binary COPY rows; a field is (numpy dtype, array of n or scalar), or
    (``"null"``, None) for a NULL."""
    spec: list[tuple[str, str]] = [("nf", ">i2")]
    for k, (dt, _) in enumerate(fields):
        spec.append((f"l{k}", ">i4"))
        if dt != "null":
            spec.append((f"v{k}", dt))
    arr = np.empty(n, np.dtype(spec))
    arr["nf"] = len(fields)
    for k, (dt, val) in enumerate(fields):
        if dt == "null":
            arr[f"l{k}"] = -1
        else:
            arr[f"l{k}"] = np.dtype(dt).itemsize
            arr[f"v{k}"] = val
    return arr.tobytes()


def _text(s: str) -> tuple[str, bytes]:
    b = s.encode()
    return f"S{len(b)}", b


def _pg_us(ts_s: I64 | F64) -> I64:
    """Binary COPY timestamptz: microseconds since 2000-01-01 UTC."""
    return np.asarray((np.asarray(ts_s, np.int64) - _PG_EPOCH_S) * 1_000_000, np.int64)


def derived_block(ts_s: I64, device: str, series: str, value: F64, valid: BOOL) -> bytes:
    """Rows of one unit's derived series (value NULL where not finite)."""
    ok = np.isfinite(value)
    out = []
    for sel, vfield in ((ok, (">f8", None)), (~ok, ("null", None))):
        if not sel.any():
            continue
        fields: list[tuple[str, Any]] = [
            (">i8", _pg_us(ts_s[sel])),
            _text(device),
            _text(series),
            (vfield[0], value[sel] if vfield[0] != "null" else None),
            ("?", valid[sel]),
        ]
        out.append(_block(fields, int(sel.sum())))
    return b"".join(out)


async def copy_blocks(
    conn: asyncpg.Connection, table: str, columns: list[str], blocks: AsyncIterator[bytes]
) -> None:
    async def source() -> AsyncIterator[bytes]:
        yield _HEADER
        async for b in blocks:
            yield b
        yield _TRAILER

    await conn.copy_to_table(table, source=source(), columns=columns, format="binary")


# -- region-scale unit-hours -----------------------------------------------------------------


@dataclass(slots=True)
class UnitHours:
    """One simulated unit's hours on the grid ``h0 + arange(n)`` (hours since the epoch)."""

    stored: BOOL
    valid: BOOL
    rate: F64
    load: F64
    valid_minutes: F64
    site_pressure_minutes: F64


def region_hours(rng: np.random.Generator, i: int, h0: int, n: int, q3_from: int) -> UnitHours:
    """Unit ``i``: a seasonal, noisy rate; scattered invalid hours; short and long gaps; every
    25th unit with a poor Q3 (15 % of its hours missing); the even units have no barometer
    (every valid minute uses the configured altitude: site-pressure minutes)."""
    h = h0 + np.arange(n)
    local = (h + 8).astype("datetime64[h]")
    doy = (local - local.astype("datetime64[Y]")).astype("timedelta64[D]").astype(float)
    in_2026 = local >= np.datetime64("2026-01-01T00")
    season = 1 + 0.15 * np.cos(2 * np.pi * (doy - 15) / 365)
    base, gross = rng.uniform(150, 650), rng.uniform(0.72, 0.90)
    trend = np.where(in_2026, rng.uniform(0.94, 1.12), 1.0)
    rate = base * season * trend * (1 + rng.normal(0, 0.04, n))
    load = rate / gross * (1 + rng.normal(0, 0.01, n))
    stored = np.ones(n, bool)
    for _ in range(4):
        s = int(rng.integers(0, n - 24))
        stored[s : s + int(rng.integers(1, 20))] = False
    if rng.random() < 0.3:
        s = int(rng.integers(q3_from, n - 120))
        stored[s : s + int(rng.integers(30, 100))] = False
    if i % 25 == 7:
        stored[q3_from:] &= rng.random(n - q3_from) > 0.15
    valid = (rng.random(n) > 0.02) & stored
    vmin = np.where(
        valid, 60 - (rng.random(n) < 0.1) * rng.integers(0, 16, n), rng.integers(1, 45, n)
    ).astype(np.float64)
    site_p = vmin if i % 2 == 0 else np.zeros(n)
    return UnitHours(stored, valid, rate, load, vmin, site_p)


def region_blocks(device: str, h0: int, u: UnitHours) -> bytes:
    idx = np.flatnonzero(u.stored)
    ts = (h0 + idx) * 3600
    valid = u.valid[idx]
    return b"".join(
        derived_block(ts, device, series, np.asarray(values[idx], np.float64), valid)
        for series, values in zip(
            HOUR_SERIES, (u.rate, u.valid_minutes, u.load, u.site_pressure_minutes), strict=True
        )
    )


def region_settings(units: int, y2025_t: list[float], rng: np.random.Generator) -> dict[str, Any]:
    """``detection`` and ``targets`` of the region: every unit at its altitude with an aux rate
    (every fourth the default), two units in three with a benchmark class, four in five with a
    budget, five plants in six with a budget, 14 plants in 15 in one of five regions (the
    others unassigned), a target per region (and one region with a target but no plant)."""
    sites: dict[str, dict[str, Any]] = {}
    for i in range(units):
        site: dict[str, Any] = {"altitude_m": ALTITUDES[(i // 4) % 2]}
        if i % 4 != 3:
            site["aux_power_frac"] = round(float(rng.uniform(0.045, 0.08)), 3)
        if i % 3 != 2:
            site["unit_class"] = CLASSES[i % len(CLASSES)]
        sites[unit_id(i)] = site
    unit_budget = {
        unit_id(i): y2025_t[i] * float(rng.uniform(0.9, 1.15)) for i in range(units) if i % 5 != 4
    }
    plants: dict[str, float] = {}
    for i in range(units):
        plants[plant_of(unit_id(i))] = plants.get(plant_of(unit_id(i)), 0.0) + y2025_t[i]
    plant_budget, plant_region, region_sum = {}, {}, dict.fromkeys(REGIONS, 0.0)
    for p, (plant, total) in enumerate(plants.items()):
        if p % 6 != 5:
            plant_budget[plant] = total * float(rng.uniform(0.92, 1.12))
        if p % 15 != 14:
            plant_region[plant] = REGIONS[p % len(REGIONS)]
            region_sum[plant_region[plant]] += total
    targets = {r: s * float(rng.uniform(0.95, 1.1)) for r, s in region_sum.items() if s}
    targets["Xilingol"] = 1_000_000.0
    return {
        "detection": {"cems_sites": sites},
        "targets": {
            "unit_budget_t": unit_budget,
            "plant_budget_t": plant_budget,
            "plant_region": plant_region,
            "region_target_t": targets,
        },
    }


# -- the minute subset -----------------------------------------------------------------------

WET = (3, 7)  # wet-basis CO2 analysers
BARO = (5, 9)  # units with their own barometer


@dataclass(slots=True)
class UnitMinutes:
    """One unit's minute channels (NaN: no reading), flags and the minutes it was silent."""

    device: str
    channels: dict[str, F64]
    flagged: dict[str, BOOL]
    silent: BOOL


def subset_minutes(rng: np.random.Generator, k: int, minutes: int) -> UnitMinutes:
    """Unit ``k``: CEMS channels every minute (``baro_pressure_pa`` only for the BARO units);
    CO2 flagged for 16-40 minutes of 3 % of the hours (those hours invalid), flow flagged in
    0.2 % of the minutes, one silent run of up to 48 h (unit 4: 30 h, the long rule)."""
    m = np.arange(minutes)
    scale = rng.uniform(0.5, 1.2)
    load = 540 * scale * (0.78 + 0.2 * np.sin(2 * np.pi * m / 1440)) + rng.normal(0, 3, minutes)
    moist = 9.0 + rng.normal(0, 0.2, minutes)
    ch = {
        "co2_pct_vol": 11.5 + (load / (540 * scale)) + rng.normal(0, 0.05, minutes),
        "flow_m3_h": 1.9e6 * load / 540 * (1 + rng.normal(0, 0.01, minutes)),
        "flue_temp_c": 120 + rng.normal(0, 0.5, minutes),
        "static_pressure_pa": -250 + rng.normal(0, 10, minutes),
        "moisture_pct_vol": moist,
        "o2_pct_vol": 6.0 + rng.normal(0, 0.1, minutes),
        "load_mw": load,
    }
    if k in WET:
        ch["co2_pct_vol"] = ch["co2_pct_vol"] * (1 - moist / 100)
    if k in BARO:
        ch["baro_pressure_pa"] = pressure_at_altitude_pa(ALTITUDES[k % 2]) + rng.normal(
            0, 30, minutes
        )
    hours = minutes // 60
    flag_co2 = np.zeros(minutes, bool)
    for h in np.flatnonzero(rng.random(hours) < 0.03):
        bad = rng.choice(60, int(rng.integers(16, 41)), replace=False)
        flag_co2[h * 60 + bad] = True
    flagged = {"co2_pct_vol": flag_co2, "flow_m3_h": rng.random(minutes) < 0.002}
    silent = np.zeros(minutes, bool)
    length = 30 if k == 4 else int(rng.integers(0, 49))
    s = int(rng.integers(48, hours - 96)) * 60 + int(rng.integers(0, 60))
    silent[s : s + length * 60] = True
    return UnitMinutes(unit_id(k), ch, flagged, silent)


def subset_settings(units: list[UnitMinutes]) -> dict[str, Any]:
    sites: dict[str, dict[str, Any]] = {}
    for k, u in enumerate(units):
        site: dict[str, Any] = {"altitude_m": ALTITUDES[k % 2], "aux_power_frac": 0.06}
        if k in WET:
            site["co2_basis"] = "wet"
        if k % 3 != 2:
            site["unit_class"] = CLASSES[k % len(CLASSES)]
        sites[u.device] = site
    plants = sorted({plant_of(u.device) for u in units})
    return {
        "detection": {"cems_sites": sites},
        "targets": {"plant_region": {p: REGIONS[j % 2] for j, p in enumerate(plants)}},
    }


def _minute_ts_s(t0_s: int, m: I64) -> I64:
    return np.asarray(t0_s + m * 60 + 5, np.int64)  # 5 s into the minute


async def reading_blocks(units: list[UnitMinutes], t0_s: int) -> AsyncIterator[bytes]:
    for u in units:
        for name, values in u.channels.items():
            flagged = u.flagged.get(name, np.zeros(values.shape[0], bool))
            for flag, sel in (("N", ~u.silent & ~flagged), ("D", ~u.silent & flagged)):
                m = np.flatnonzero(sel)
                if m.size == 0:
                    continue
                ts = _pg_us(_minute_ts_s(t0_s, m))
                yield _block(
                    [(">i8", ts), _text(u.device), _text(name), (">f8", values[m]),
                     _text(flag), (">i8", ts)],
                    m.size,
                )  # fmt: skip


def run_engine(
    settings: Settings, units: list[UnitMinutes], t0_s: int, say: Callable[[str], None]
) -> tuple[list[tuple[str, str, I64, F64, BOOL]], int]:
    """Feed the minute readings to the detection engine a day at a time; returns the derived
    rows grouped by (device, series) and the number of readings processed."""
    engine = DetectionEngine(settings.detection)
    minutes = units[0].silent.shape[0]
    sid: dict[tuple[int, str], int] = {}
    for k, u in enumerate(units):
        for name in u.channels:
            sid[(k, name)] = engine.register(u.device, name)
    parts: dict[tuple[str, str], list[tuple[I64, F64, BOOL]]] = {}
    n_in = 0
    for day, a in enumerate(range(0, minutes, 1440)):
        b = min(a + 1440, minutes)
        s_l, t_l, v_l, u_l = [], [], [], []
        for k, u in enumerate(units):
            for name, values in u.channels.items():
                m = a + np.flatnonzero(~u.silent[a:b])
                flagged = u.flagged.get(name)
                s_l.append(np.full(m.size, sid[(k, name)], np.int64))
                t_l.append(_minute_ts_s(t0_s, m) * NS)
                v_l.append(values[m])
                u_l.append(~flagged[m] if flagged is not None else np.ones(m.size, bool))
        out = engine.process(
            np.concatenate(s_l), np.concatenate(t_l), np.concatenate(v_l), np.concatenate(u_l)
        )
        n_in += sum(x.size for x in s_l)
        d = out.derived
        dev = np.asarray(d.device_id, object)
        ser = np.asarray(d.series, object)
        for key in set(zip(d.device_id, d.series, strict=True)):
            sel = (dev == key[0]) & (ser == key[1])
            parts.setdefault(key, []).append((d.ts_ns[sel], d.value[sel], d.valid[sel]))
        if day % 15 == 0:
            say(f"detection engine: day {day + 1}, {n_in:,} readings")
    rows = [
        (dev_, ser_, np.concatenate([p[0] for p in ps]) // NS, np.concatenate([p[1] for p in ps]),
         np.concatenate([p[2] for p in ps]))
        for (dev_, ser_), ps in sorted(parts.items())
    ]  # fmt: skip
    return rows, n_in


# -- figures straight from the raw minute rows -----------------------------------------------

_PARAMS = tuple(CEMS_PARAMS)
_RAW_SQL = (
    "SELECT (u.i - 1)::int4, date_trunc('minute', r.ts), "
    + ", ".join(
        f"coalesce(avg(r.value) FILTER (WHERE r.metric = '{p}' AND r.flag = 'N'), 'NaN')::float8"
        for p in _PARAMS
    )
    + " FROM readings r JOIN unnest($3::text[]) WITH ORDINALITY AS u(device_id, i)"
    " ON u.device_id = r.device_id WHERE r.ts >= $1 AND r.ts < $2 GROUP BY 1, 2"
)
_RAW_ROW = np.dtype(
    [("nf", ">i2"), ("l_u", ">i4"), ("u", ">i4"), ("l_ts", ">i4"), ("ts", ">i8")]
    + [x for p in _PARAMS for x in ((f"l_{p}", ">i4"), (p, ">f8"))]
)


@dataclass(slots=True)
class Figures:
    """A unit's quarter figures."""

    valid_h: int
    substituted_h: int
    quarter_t: float | None
    gross_g_kwh: float | None


async def raw_figures(
    conn: asyncpg.Connection, settings: Settings, q: Quarter, tz: str, devices: list[str]
) -> dict[str, Figures]:
    """The quarter's figures of ``devices`` from the raw minute rows in ``readings``.

    Per minute the mean of each channel's unflagged readings; a valid minute has CO2, flow,
    temperature, moisture and a pressure (the unit's barometer, else its configured site
    pressure or altitude; static pressure 0 when absent); its mass rate is HJ 75's. An hour is
    valid with >= ``min_valid_minutes`` valid minutes, its rate and load the means over them;
    the hours go on the report's grid (the year start minus the longest look-back to the
    quarter end) through the HJ 75-2017 substitution of :func:`account_hours`.
    """
    q_start, q_end = q.start(tz), q.end(tz)
    limits = substitution_limits(settings.targets)
    read_start = q.year_start(tz) - timedelta(hours=limits.max_lookback_h)
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(_RAW_SQL, read_start, q_end, devices, output=sink, format="binary")
    raw = b"".join(chunks)
    rec = np.frombuffer(raw[19 : len(raw) - 2], _RAW_ROW)
    det = settings.detection
    unit = rec["u"].astype(np.int64)
    baro_cfg = np.full(len(devices), np.nan)
    wet = np.zeros(len(devices), bool)
    for j, dev in enumerate(devices):
        site = det.cems_site(dev)
        if site.baro_pa is not None:
            baro_cfg[j] = site.baro_pa
        elif site.altitude_m is not None:
            baro_cfg[j] = float(pressure_at_altitude_pa(site.altitude_m))
        wet[j] = site.co2_basis == "wet"

    def col(p: str) -> F64:
        return np.asarray(rec[p].astype(np.float64))

    baro = col("baro_pressure_pa")
    baro = np.where(np.isfinite(baro), baro, baro_cfg[unit])
    static = np.nan_to_num(col("static_pressure_pa"))
    moist = col("moisture_pct_vol")
    co2 = col("co2_pct_vol")
    co2 = np.where(wet[unit], co2_dry_from_wet_pct(co2, moist), co2)
    q_sn = dry_standard_flow_m3_h(col("flow_m3_h"), col("flue_temp_c"), baro, static, moist)
    g = co2_mass_rate_t_h(co2, q_sn)
    load = col("load_mw")
    ok = np.isfinite(g)

    offset_h = int(
        (ZoneInfo(tz).utcoffset(q_start.replace(tzinfo=None)) or timedelta()) / timedelta(hours=1)
    )
    g0, q0, q1 = (int(d.timestamp()) // 3600 for d in (read_start, q_start, q_end))
    n = q1 - g0
    grid_h = np.arange(g0, q1, dtype=np.int64)
    quarter_of = ((grid_h + offset_h).astype("datetime64[h]").astype("datetime64[M]")).astype(
        np.int64
    ) // 3
    q_mask = grid_h >= q0
    hour = (rec["ts"].astype(np.int64) // 3_600_000_000 + _PG_EPOCH_S // 3600) - g0
    out: dict[str, Figures] = {}
    for j, dev in enumerate(devices):
        sel = ok & (unit == j)
        n_min = np.bincount(hour[sel], minlength=n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.bincount(hour[sel], weights=g[sel], minlength=n) / n_min
            load_h = np.bincount(hour[sel], weights=load[sel], minlength=n) / n_min
        valid = n_min >= det.min_valid_minutes
        acc = account_hours(valid, rate, quarter_of, limits)
        em = acc.emission_t[q_mask]
        qv = acc.valid & q_mask
        with_load = qv & np.isfinite(load_h) & (load_h > 0)
        energy = float(load_h[with_load].sum())
        out[dev] = Figures(
            valid_h=int(qv.sum()),
            substituted_h=int((acc.substituted & q_mask).sum()),
            quarter_t=float(np.nansum(em)) if np.isfinite(em).all() else None,
            gross_g_kwh=1000.0 * float(rate[with_load].sum()) / energy if energy > 0 else None,
        )
    return out


def report_start(q: Quarter, tz: str) -> datetime:
    """First hour the region's derived series cover: 1 January of last year (its months give
    the seasonal shape; the look-back before this year falls inside it)."""
    return Quarter(q.year - 1, 1).start(tz)
