"""Seven quarters of CEMS unit-hours (2025Q1-2026Q3), as the detection engine stores them.

Hourly rows are written straight into ``derived`` with invalid hours, missing runs short and
long, a plant trending over its budget (Baotou), a region lagging its target (Ordos), a unit
without class or budget and a unit with poor completeness in 2026Q3. ``test_plants``
recomputes every figure from these rows; the full-report and dashboard tests store them beside
the other sources so that the plants and regions sections have something to say.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

OVER = "beifang-power/baotou-plant/unit-1"  # 2026 runs 15 % above 2025; plant over budget
BARE = "beifang-power/baotou-plant/unit-2"  # no class, no budget
ORD = "yimeng-power/ordos-plant/unit-1"  # fine itself; poor completeness in 2026Q3
UNITS = (OVER, BARE, ORD)
CST = timedelta(hours=8)
START = datetime(2025, 1, 1, tzinfo=UTC) - CST  # local midnight
END = datetime(2026, 10, 1, tzinfo=UTC) - CST
N = int((END - START) / timedelta(hours=1))
H0 = int(START.timestamp()) // 3600
GROSS_T_MWH = {OVER: 0.85, BARE: 0.90, ORD: 0.70}
BASE_T_H = {OVER: 400.0, BARE: 200.0, ORD: 300.0}
AUX = {OVER: 0.06, ORD: 0.05}  # BARE: the default 6 %
INSERT_DERIVED = (
    "INSERT INTO derived (ts, device_id, series, value, valid) SELECT * FROM"
    " unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::bool[])"
)


def local_hours(h: np.ndarray) -> np.ndarray:
    return (h + 8).astype("datetime64[h]")


def simulate(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Per unit: stored (bool), valid, rate t/h, load MW on the hour grid of the data."""
    h = H0 + np.arange(N)
    local = local_hours(h)
    doy = (local - local.astype("datetime64[Y]")).astype("timedelta64[D]").astype(float)
    in_2026 = local >= np.datetime64("2026-01-01T00")
    q3_2026 = in_2026 & (local >= np.datetime64("2026-07-01T00"))
    season = 1 + 0.15 * np.cos(2 * np.pi * (doy - 15) / 365)
    out = {}
    for dev in UNITS:
        trend = np.where(in_2026, 1.15 if dev == OVER else 1.0, 1.0)
        rate = BASE_T_H[dev] * season * trend * (1 + rng.normal(0, 0.04, N))
        load = rate / GROSS_T_MWH[dev] * (1 + rng.normal(0, 0.01, N))
        stored = np.ones(N, bool)
        valid = rng.random(N) > 0.02  # scattered invalid hours (stored, flagged invalid)
        k = int(np.flatnonzero(q3_2026)[0])
        stored[k + 200 : k + 210] = False  # a 10 h gap: short rule
        stored[k + 900 : k + 940] = False  # a 40 h gap: long rule
        if dev == ORD:
            stored &= ~(q3_2026 & (rng.random(N) < 0.15))  # 2026Q3 completeness ~ 83 %
        out[dev] = {"stored": stored, "valid": valid & stored, "rate": rate, "load": load}
    return out


async def store(url: str, sim: dict[str, dict[str, np.ndarray]]) -> None:
    ts_all, dev_all, series_all, value_all, valid_all = [], [], [], [], []
    for dev, s in sim.items():
        idx = np.flatnonzero(s["stored"])
        ts = [datetime.fromtimestamp(int(H0 + i) * 3600, UTC) for i in idx]
        valid = s["valid"][idx].tolist()
        for series, values in (
            ("co2_mass_t_h_1h", s["rate"][idx]),
            ("load_mw_1h", s["load"][idx]),
            ("valid_minutes_1h", np.where(s["valid"][idx], 60.0, 30.0)),
            ("site_pressure_minutes_1h", np.zeros(idx.size)),
        ):
            ts_all += ts
            dev_all += [dev] * idx.size
            series_all += [series] * idx.size
            value_all += values.tolist()
            valid_all += valid
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(INSERT_DERIVED, ts_all, dev_all, series_all, value_all, valid_all)
    finally:
        await conn.close()


def settings_for(sim: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The ``detection`` and ``targets`` settings of the simulated units: budgets from 2025's
    actual emissions (OVER's plant gets 95 % of it), Ordos a target 10 % below its unit's
    pace, Baotou a generous one, and a region with a target but no plant."""
    y2025 = {dev: float(s["rate"][:8760].sum()) for dev, s in sim.items()}
    return {
        "detection": {
            "cems_sites": {
                OVER: {"aux_power_frac": AUX[OVER], "unit_class": "600mw_sc", "altitude_m": 1050},
                BARE: {"altitude_m": 1050},
                ORD: {"aux_power_frac": AUX[ORD], "unit_class": "300mw_sc"},
            }
        },
        "targets": {
            "unit_budget_t": {OVER: 0.95 * y2025[OVER], ORD: 1.2 * y2025[ORD]},
            "plant_budget_t": {"beifang-power/baotou-plant": 0.95 * (y2025[OVER] + y2025[BARE])},
            "plant_region": {
                "beifang-power/baotou-plant": "Baotou",
                "yimeng-power/ordos-plant": "Ordos",
            },
            "region_target_t": {
                "Baotou": 1.5 * (y2025[OVER] + y2025[BARE]),
                "Ordos": 0.9 * y2025[ORD],
                "Wuhai": 1_000_000.0,  # a target, but no plant assigned to it
            },
        },
    }
