"""Simulated stored data over five quarters for the quarterly report tests.

Written straight into a migrated database (raw readings, the detection service's derived
enhancement, detections and alerts), with the truths the tests check computed here from
the same rows, independently of the report's SQL:

- Baotou's enhancement rises quarter by quarter (5 -> 10 ppm), Ordos stays at 4 ppm;
- mine ``ordos-coal/buertai``: exceedances (one begun before the quarter, one still open
  at its end), a power cut, gas releases, alerts acknowledged after 10, 40 and 50 min;
- mine ``baotou-coal/hadamen``: poor data (a sensor silent after 20 days, one with 30 % of
  its hours flagged D);
- CEMS unit ``beifang/dalate/unit-3``: minute data for two days only;
- gas site ``changqing/sulige``: one release.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np

from reports import Quarter

TZ = "Asia/Shanghai"
LOCAL = ZoneInfo(TZ)
Q = Quarter(2026, 3)
QUARTERS = [Quarter(2025, 3), Quarter(2025, 4), Quarter(2026, 1), Quarter(2026, 2), Q]
CITY_LEVELS = {"baotou": [5.0, 6.0, 7.0, 8.0, 10.0], "ordos": [4.0, 4.0, 4.0, 4.0, 4.0]}
STATIONS = {
    "baotou": ["baotou/kundulun/pic-01", "baotou/donghe/pic-02"],
    "ordos": ["ordos/kangbashi/pic-03", "ordos/dongsheng/pic-04"],
}
BUERTAI = ["ordos-coal/buertai/t1-01", "ordos-coal/buertai/t1-02", "ordos-coal/buertai/main-01"]
HADAMEN = ["baotou-coal/hadamen/s1", "baotou-coal/hadamen/s2", "baotou-coal/hadamen/s3"]
LEAK = "changqing/sulige/ch4-01"
CEMS = "beifang/dalate/unit-3"
FIRST_SEEN = datetime(2025, 7, 1, tzinfo=LOCAL)


def local(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=LOCAL)


@dataclass
class Sim:
    """What was written, and the truths computed from it."""

    readings: list[tuple[Any, ...]] = field(default_factory=list)
    derived: list[tuple[Any, ...]] = field(default_factory=list)
    city_mean: dict[str, dict[Quarter, float]] = field(default_factory=dict)
    alarms: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)


def _hours(q: Quarter) -> list[datetime]:
    start = q.start(TZ)
    return [start + timedelta(hours=h) for h in range(q.hours(TZ))]


@functools.cache
def build() -> Sim:
    """The simulated data (built once per run: tests must not change it)."""
    sim = Sim()
    rng = np.random.default_rng(7)
    for city, levels in CITY_LEVELS.items():
        sim.city_mean[city] = {}
        for q, level in zip(QUARTERS, levels, strict=True):
            values: list[float] = []
            for dev in STATIONS[city]:
                hours = _hours(q)
                v = level + rng.normal(0, 0.5, len(hours))
                valid = rng.random(len(hours)) > 0.05
                v[~valid] += 50.0  # invalid points must not count
                for ts, x, ok in zip(hours, v.tolist(), valid.tolist(), strict=True):
                    sim.derived.append((ts, dev, "co2_ppm_enhancement", x, ok))
                values.extend(v[valid].tolist())
            sim.city_mean[city][q] = float(np.mean(values))
    received = Q.end(TZ)
    hours = _hours(Q)
    for city, devs in STATIONS.items():
        for dev in devs:
            for i, h in enumerate(hours):
                if dev == "ordos/dongsheng/pic-04" and i >= len(hours) - 30 * 24:
                    continue  # silent for the last 30 days
                sim.readings.append(
                    (h + timedelta(minutes=7), dev, "co2_ppm", 420.0, "N", received)
                )
        del city
    for dev in [*BUERTAI, *HADAMEN, LEAK]:
        metric = "ch4_ppm" if dev == LEAK else "ch4_pct_vol"
        for i, h in enumerate(hours):
            if dev.endswith("/s2") and i >= 20 * 24:
                continue
            flag = "D" if dev.endswith("/s3") and i % 10 < 3 else "N"
            for m in (0, 20, 40):
                sim.readings.append((h + timedelta(minutes=m, seconds=5), dev, metric, 0.3, flag,
                                     received))  # fmt: skip
    for i in range(48):  # two days of minute data; hours 5 and 9 have 30 minutes only
        h = hours[i]
        for m in range(30 if i in (5, 9) else 60):
            sim.readings.append(
                (h + timedelta(minutes=m), CEMS, "co2_pct_vol", 12.0, "N", received)
            )
    sim.alarms = [
        ("ordos-coal/buertai/t1-01", local(2026, 6, 30, 22), local(2026, 7, 1, 2)),
        ("ordos-coal/buertai/t1-02", local(2026, 8, 10, 10), local(2026, 8, 10, 12, 30)),
        ("ordos-coal/buertai/t1-01", local(2026, 9, 30, 23), None),
    ]
    return sim


def alarm_hours_in_quarter(alarms: list[tuple[str, datetime, datetime | None]]) -> float:
    """Independent: alarm durations clipped to the quarter, in hours."""
    start, end = Q.start(TZ), Q.end(TZ)
    total = 0.0
    for _dev, a, b in alarms:
        total += ((min(b or end, end)) - max(a, start)).total_seconds() / 3600
    return total


def hours_truth(sim: Sim, devices: list[str]) -> tuple[float, float, float]:
    """Independent from the raw rows: (expected, valid, silent) hours of ``devices`` in Q."""
    start = Q.start(TZ)
    data: dict[str, set[int]] = {d: set() for d in devices}
    valid: dict[str, set[int]] = {d: set() for d in devices}
    for ts, dev, _m, _v, flag, _r in sim.readings:
        if dev in data:
            hour = int((ts - start).total_seconds() // 3600)
            data[dev].add(hour)
            if flag == "N":
                valid[dev].add(hour)
    n = Q.hours(TZ)
    return (
        float(n * len(devices)),
        float(sum(len(v) for v in valid.values())),
        float(sum(n - len(v) for v in data.values())),
    )


async def _device(conn: asyncpg.Connection, device_id: str, kind: str, loc: str | None) -> None:
    network, site, device = device_id.split("/")
    await conn.execute(
        """INSERT INTO devices (device_id, kind, network, site, device, location, first_seen,
                                last_seen, last_reading_ts, readings_count)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, 0) ON CONFLICT DO NOTHING""",
        device_id, kind, network, site, device, loc, FIRST_SEEN,
    )  # fmt: skip


async def add_alarm(conn: asyncpg.Connection, dev: str, a: datetime, b: datetime | None) -> None:
    await add_detection(conn, dev, "threshold_alarm", "critical", a, b)


async def add_detection(
    conn: asyncpg.Connection,
    dev: str,
    detector: str,
    severity: str,
    a: datetime,
    b: datetime | None,
    kind: str = "mine",
) -> None:
    network, site, _d = dev.split("/")
    await conn.execute(
        """INSERT INTO detections (detection_id, state, device_id, kind, network, site, metric,
               detector, severity, started_at, ended_at, score, value, threshold)
           VALUES ($1, $2, $3, $4, $5, $6, 'ch4_pct_vol', $7, $8, $9, $10, 3, 1.2, 1.0)""",
        f"{dev}|{detector}|{a.isoformat()}", "open" if b is None else "cleared", dev, kind,
        network, site, detector, severity, a, b,
    )  # fmt: skip


async def add_alert(
    conn: asyncpg.Connection, dev: str, started: datetime, ack_after_min: float | None
) -> None:
    network, site, _d = dev.split("/")
    acked = None if ack_after_min is None else started + timedelta(minutes=ack_after_min)
    await conn.execute(
        """INSERT INTO alerts (group_key, rule, grp, network, site, kind, severity, state,
               device_id, metric, detector, value, started_at, last_seen_at, acknowledged_at,
               acknowledged_by, resolved_at)
           VALUES ($1, 'gas', 'gas', $2, $3, 'mine', 'critical', 'resolved', $4, 'ch4_pct_vol',
                   'threshold_alarm', 1.2, $5, $5, $6, 'duty', $5)""",
        f"{network}/{site}/gas", network, site, dev, started, acked,
    )  # fmt: skip


ACK_MINUTES = [10.0, 40.0, 50.0]


async def write(conn: asyncpg.Connection, sim: Sim) -> None:
    """Write the simulated data (devices, readings, derived, detections, alerts)."""
    for devs in STATIONS.values():
        for d in devs:
            await _device(conn, d, "city", None)
    for d in [*BUERTAI, *HADAMEN]:
        await _device(conn, d, "mine", "T1")
    await _device(conn, LEAK, "leak", None)
    await _device(conn, CEMS, "cems", None)
    await conn.copy_records_to_table(
        "readings", records=sim.readings,
        columns=["ts", "device_id", "metric", "value", "flag", "received_at"],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "derived", records=sim.derived, columns=["ts", "device_id", "series", "value", "valid"]
    )
    for dev, a, b in sim.alarms:
        await add_alarm(conn, dev, a, b)
    await add_detection(conn, BUERTAI[1], "power_cut", "critical", local(2026, 8, 10, 11),
                        local(2026, 8, 10, 11, 20))  # fmt: skip
    for day in (3, 4, 5, 6):
        await add_detection(conn, BUERTAI[2], "release", "critical", local(2026, 9, day, 8),
                            local(2026, 9, day, 9))  # fmt: skip
    await add_detection(conn, BUERTAI[2], "release", "critical", local(2026, 6, 3, 8),
                        local(2026, 6, 3, 9))  # fmt: skip  # the quarter before: not counted
    await add_detection(conn, LEAK, "release", "critical", local(2026, 8, 1, 8),
                        local(2026, 8, 1, 9), kind="leak")  # fmt: skip
    for start, ack in zip(
        [local(2026, 7, 5, 10), local(2026, 8, 10, 10), local(2026, 9, 1, 3)],
        ACK_MINUTES,
        strict=True,
    ):
        await add_alert(conn, BUERTAI[0], start, ack)
    await add_alert(conn, BUERTAI[0], local(2026, 9, 15, 3), None)  # never acknowledged
    await add_alert(conn, BUERTAI[0], local(2026, 5, 15, 3), 500.0)  # the quarter before
