"""Minute readings → detection engine → stored hours → quarterly figures, against HJ 75 by hand.

Two Ordos units over two days of 2026Q4: one at 1,450 m with no barometer (the standard
atmosphere at its configured altitude), one with a wet-basis CO2 analyser. The test computes
every figure itself from the raw minute rows with the HJ 75 formulas written out in numpy,
then compares the plants section's tables and JSON with it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import numpy as np
import pytest

from core.settings import Settings
from processors.detection import DetectionEngine
from processors.storage.migrate import migrate
from reports.model import Quarter, SectionContext
from reports.plants import plants_section

NS = 1_000_000_000
ALT = "yimeng-power/ordos-plant/unit-1"  # altitude, no barometer, dry analyser
WET = "yimeng-power/ordos-plant/unit-2"  # wet-basis analyser, barometer
T0 = datetime(2026, 9, 30, 16, tzinfo=UTC)  # 2026-10-01 00:00 China Standard Time
HOURS = 48
MINUTES = HOURS * 60 + 2  # two minutes into hour 48 close hour 47
FLAGGED_CO2 = range(5 * 60, 5 * 60 + 31)  # hour 5: 29 valid minutes, invalid
SILENT = range(20 * 60, 21 * 60)  # hour 20 of the altitude unit: nothing sent
ALTITUDE_M = 1450.0
AUX = {ALT: 0.06, WET: 0.07}
INSERT_DERIVED = (
    "INSERT INTO derived (ts, device_id, series, value, valid) SELECT * FROM"
    " unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::bool[])"
)


def _channels(rng: np.random.Generator, wet: bool) -> dict[str, np.ndarray]:
    m = np.arange(MINUTES)
    load = 420 + 120 * np.sin(2 * np.pi * m / 1440) + rng.normal(0, 3, MINUTES)
    ch = {
        "load_mw": load,
        "co2_pct_vol": 11.5 + 1.0 * (load / 540) + rng.normal(0, 0.05, MINUTES),
        "flow_m3_h": 1.9e6 * load / 540 * (1 + rng.normal(0, 0.01, MINUTES)),
        "flue_temp_c": 120 + rng.normal(0, 0.5, MINUTES),
        "static_pressure_pa": -250 + rng.normal(0, 10, MINUTES),
        "moisture_pct_vol": 9.0 + rng.normal(0, 0.2, MINUTES),
        "o2_pct_vol": 6.0 + rng.normal(0, 0.1, MINUTES),
    }
    if wet:
        ch["baro_pressure_pa"] = 85_100 + rng.normal(0, 30, MINUTES)
        ch["co2_pct_vol"] = ch["co2_pct_vol"] * (1 - ch["moisture_pct_vol"] / 100)
    return ch


def _hj75_minutes(ch: dict[str, np.ndarray], wet: bool) -> np.ndarray:
    """HJ 75 by hand per minute: G = C_dry·10⁴·44.01/22.414·Q_sn·10⁻⁹ t/h."""
    baro = ch.get("baro_pressure_pa")
    if baro is None:
        baro = np.full(MINUTES, 101_325.0 * (1 - 2.25577e-5 * ALTITUDE_M) ** 5.25588)
    x_sw = ch["moisture_pct_vol"] / 100
    q_sn = (
        ch["flow_m3_h"]
        * 273.15
        / (273.15 + ch["flue_temp_c"])
        * (baro + ch["static_pressure_pa"])
        / 101_325.0
        * (1 - x_sw)
    )
    c_dry = ch["co2_pct_vol"] / (1 - x_sw) if wet else ch["co2_pct_vol"]
    return np.asarray(c_dry * 1e4 * 44.01 / 22.414 * q_sn * 1e-9)


def _expected(ch: dict[str, np.ndarray], wet: bool, silent: bool, aux: float) -> dict[str, float]:
    """Quarter figures from the minute rows: valid hours, substitution, intensities."""
    g = _hj75_minutes(ch, wet)
    ok = np.ones(MINUTES, bool)
    ok[list(FLAGGED_CO2)] = False
    if silent:
        ok[list(SILENT)] = False
    rate, load, valid = np.full(HOURS, np.nan), np.full(HOURS, np.nan), np.zeros(HOURS, bool)
    for h in range(HOURS):
        sel = np.arange(h * 60, h * 60 + 60)
        sel = sel[ok[sel]]
        if sel.size >= 45:
            valid[h] = True
            rate[h] = g[sel].mean()
            load[h] = ch["load_mw"][sel].mean()
    emitted = rate.copy()
    assert valid.mean() >= 0.90  # full capture: the 180/720-hour rules of HJ 75-2017 12.2
    for h in np.flatnonzero(~valid):  # isolated invalid hours: max of the 180 valid before
        emitted[h] = rate[:h][valid[:h]][-180:].max()
    gross = 1000 * rate[valid].sum() / load[valid].sum()
    return {
        "quarter_t": float(emitted.sum()),
        "substituted_t": float(emitted[~valid].sum()),
        "substituted_h": float((~valid).sum()),
        "valid_h": float(valid.sum()),
        "gross": float(gross),
        "net": float(gross / (1 - aux)),
    }


async def _store_engine_output(
    url: str, cfg: Settings, raw: dict[str, dict[str, np.ndarray]]
) -> None:
    engine = DetectionEngine(cfg.detection)
    t0_ns = int(T0.timestamp()) * NS
    streams, ts, vals, usable = [], [], [], []
    for dev, ch in raw.items():
        for name, series in ch.items():
            sid = engine.register(dev, name)
            for m in range(MINUTES):
                if dev == ALT and m in SILENT:
                    continue
                streams.append(sid)
                ts.append(t0_ns + m * 60 * NS + 5 * NS)
                vals.append(float(series[m]))
                usable.append(not (name == "co2_pct_vol" and m in FLAGGED_CO2))
    order = np.argsort(np.asarray(ts), kind="stable")
    out = engine.process(
        np.asarray(streams)[order],
        np.asarray(ts)[order],
        np.asarray(vals)[order],
        np.asarray(usable)[order],
    )
    d = out.derived
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            INSERT_DERIVED,
            [datetime.fromtimestamp(t / NS, UTC) for t in d.ts_ns.tolist()],
            d.device_id,
            d.series,
            [v if np.isfinite(v) else None for v in d.value.tolist()],
            d.valid.tolist(),
        )
    finally:
        await conn.close()


async def test_quarter_totals_of_an_altitude_unit_and_a_wet_basis_unit_match_hj75_by_hand(
    pg_url: str,
) -> None:
    """Totals, substituted hours and gross/net intensity equal the hand computation."""
    cfg = Settings(
        db={"url": pg_url},
        detection={
            "cems_sites": {
                ALT: {
                    "altitude_m": ALTITUDE_M,
                    "aux_power_frac": AUX[ALT],
                    "unit_class": "600mw_sc",
                },
                WET: {"co2_basis": "wet", "aux_power_frac": AUX[WET], "unit_class": "300mw_sc"},
            }
        },
        targets={"plant_region": {"yimeng-power/ordos-plant": "Ordos"}},
    )
    await migrate(pg_url, cfg.db)  # TimescaleDB where the server has it
    rng = np.random.default_rng(7)
    raw = {ALT: _channels(rng, wet=False), WET: _channels(rng, wet=True)}
    await _store_engine_output(pg_url, cfg, raw)

    conn = await asyncpg.connect(pg_url)
    try:
        section = await plants_section(
            SectionContext(conn, cfg, Quarter(2026, 4), now=datetime(2026, 12, 4, tzinfo=UTC))
        )
    finally:
        await conn.close()
    rows = {r["unit"]: r for r in section.tables[0].rows}
    data = {u["unit"]: u for u in section.data["units"]}
    for dev, wet, silent in ((ALT, False, True), (WET, True, False)):
        want = _expected(raw[dev], wet, silent, AUX[dev])
        row = data[dev]
        assert row["expected_hours"] == HOURS
        assert row["valid_hours"] == want["valid_h"]
        assert row["substituted_h"] == want["substituted_h"]
        assert row["quarter_t"] == pytest.approx(want["quarter_t"], abs=0.06)
        assert row["substituted_t"] == pytest.approx(want["substituted_t"], abs=0.06)
        assert row["gross_g_kwh"] == pytest.approx(want["gross"], abs=0.06)
        assert row["net_g_kwh"] == pytest.approx(want["net"], abs=0.06)
        assert rows[dev]["level"] in {"green", "yellow", "orange", "red"}
        # the unit's data start on 1 October: nothing before it is invented for the year
        assert row["ytd_t"] == pytest.approx(row["quarter_t"], abs=0.06)
        assert "data from 2026-10-01 00:00" in (rows[dev]["note"] or "")
        marked = {(h["start"], h["hours"], h["rule"]) for h in row["substituted_hours"]}
        assert ("2026-10-01T05:00:00+08:00", 1, "short") in marked
    # every valid hour of the altitude unit used its configured (standard-atmosphere) pressure
    assert data[ALT]["site_pressure_h"] == HOURS - 2
    assert data[WET]["site_pressure_h"] == 0
    subs = section.tables[2].rows
    assert {(r["unit"], r["start"]) for r in subs} >= {
        (ALT, "2026-10-01T05:00:00+08:00"),
        (ALT, "2026-10-01T20:00:00+08:00"),
        (WET, "2026-10-01T05:00:00+08:00"),
    }
