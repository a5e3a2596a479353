"""Plants and regions sections over seven quarters of stored unit-hours, against plain numpy.

The unit-hours are :mod:`tests.reports.cems_sim`'s. The test recomputes every figure from
the raw rows with its own loops (HJ 75-2017 valid day/month and substitution written out, the
projection formula written out) and compares with the sections.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import pytest

from core.settings import Settings
from processors.storage.migrate import migrate
from registry.models import DeviceRecord
from registry.store import RegistryStore
from reports.model import Quarter, SectionContext
from reports.plants import plants_section, regions_section
from reports.targets import benchmark_g_co2_kwh
from tests.reports.cems_sim import (
    AUX,
    BARE,
    CST,
    END,
    H0,
    INSERT_DERIVED,
    ORD,
    OVER,
    UNITS,
    N,
    settings_for,
    simulate,
    store,
)
from tests.reports.cems_sim import local_hours as _local
from wire import SourceKind


def _substitute(
    valid: np.ndarray, rate: np.ndarray, quarter: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """HJ 75-2017 12.2 substitution, written out as loops. Per hour, by the capture rate of its
    quarter on the grid: >= 90 % and run <= 24 h: the maximum of the 180 valid hours before the
    run; >= 90 % and longer: of the 720 before; below 90 %: of the 2,160 before (the valid
    hours after it, with none before)."""
    n = valid.shape[0]
    capture = {q: valid[quarter == q].mean() for q in np.unique(quarter)}
    out = np.where(valid, rate, np.nan)
    sub = np.zeros(n, bool)
    rules = [""] * n
    i = 0
    while i < n:
        if valid[i]:
            i += 1
            continue
        j = i
        while j < n and not valid[j]:
            j += 1
        before = [rate[k] for k in range(i) if valid[k]]
        after = [rate[k] for k in range(j, n) if valid[k]]
        for h in range(i, j):
            a = capture[quarter[h]]
            if a >= 0.90:
                rule, look = ("short", 180) if j - i <= 24 else ("long", 720)
            else:
                rule, look = ("capture_75_90" if a >= 0.75 else "capture_below_75"), 2160
            out[h] = max(before[-look:]) if before else max(after[:look])
            sub[h] = True
            rules[h] = rule
        i = j
    return out, sub, rules


def _expected(sim: dict[str, dict[str, np.ndarray]], dev: str, q: Quarter) -> dict[str, float]:
    s = sim[dev]
    y0 = int((datetime(q.year, 1, 1, tzinfo=UTC) - CST).timestamp()) // 3600
    q0 = int((datetime(q.year, 3 * q.q - 2, 1, tzinfo=UTC) - CST).timestamp()) // 3600
    q1 = H0 + N  # the data end (2026-10-01 local)
    g0 = y0 - 2160
    grid = np.arange(g0, q1)
    pos = grid - H0
    inside = (pos >= 0) & (pos < N)
    valid = np.zeros(grid.size, bool)
    rate = np.full(grid.size, np.nan)
    load = np.full(grid.size, np.nan)
    valid[inside] = s["valid"][pos[inside]]
    rate[inside] = s["rate"][pos[inside]]
    load[inside] = s["load"][pos[inside]]
    months = _local(grid).astype("datetime64[M]").astype(np.int64)
    em, sub, rules = _substitute(valid, rate, months // 3)
    inq = grid >= q0
    iny = grid >= y0
    qv = valid & inq
    gross = 1000 * rate[qv].sum() / load[qv].sum()
    # valid days and months of the quarter
    local = _local(grid[inq])
    days = local.astype("datetime64[D]")
    day_list = np.unique(days)
    valid_hours_per_day = np.array([valid[inq][days == d].sum() for d in day_list])
    valid_day = valid_hours_per_day >= 20
    months = day_list.astype("datetime64[M]")
    valid_months = 0
    for m in np.unique(months):
        need = 23 if int(str(m)[5:7]) == 2 else 25
        valid_months += int(valid_day[months == m].sum() >= need)
    # projection: this year's year to date scaled by last year's shape
    ly = (_local(H0 + np.arange(N)) < np.datetime64(f"{q.year}-01-01T00")) & (
        _local(H0 + np.arange(N)) >= np.datetime64(f"{q.year - 1}-01-01T00")
    )
    ly_month = _local(H0 + np.arange(N))[ly].astype("datetime64[M]")
    ly_valid = s["valid"][ly]
    ly_rate = s["rate"][ly]
    month_rate = {m: ly_rate[(ly_month == m) & ly_valid].mean() for m in np.unique(ly_month)}
    per_hour = np.array([month_rate[m] for m in ly_month])
    split = q1 - y0
    ly_before, ly_rest = per_hour[:split].sum(), per_hour[split:].sum()
    ytd = em[iny].sum()
    rest = ytd / ly_before * ly_rest
    # uncertainty: the quarter's daily totals, complete days with a valid hour
    daily = np.array([em[inq][days == d].sum() for d in day_list])
    keep = valid_hours_per_day > 0
    d = daily[keep]
    r = d - d.mean()
    r1 = min(max(float((r[1:] * r[:-1]).sum() / (r * r).sum()), 0.0), 0.95)
    n_eff = d.size * (1 - r1) / (1 + r1)
    sigma = rest * d.std(ddof=1) / (d.mean() * math.sqrt(n_eff))
    return {
        "quarter_t": float(em[inq].sum()),
        "substituted_t": float(em[inq & sub].sum()),
        "substituted_h": float((inq & sub).sum()),
        "valid_h": float(qv.sum()),
        "completeness": 100 * float(qv.sum()) / float(inq.sum()),
        "ytd_t": float(ytd),
        "gross": float(gross),
        "net": float(gross / (1 - AUX.get(dev, 0.06))),
        "valid_days": float(valid_day.sum()),
        "valid_months": float(valid_months),
        "projected_t": float(ytd + rest),
        "pm90": float(1.6448536269514722 * sigma),
        "rules": {r for r, q in zip(rules, inq, strict=True) if r and q},
    }


NOW = datetime(2026, 12, 4, tzinfo=UTC)  # 2026Q3 closed, 2026Q4 running, whenever this runs


@pytest.fixture
async def stored(pg_url: str) -> tuple[str, Settings, dict[str, dict[str, np.ndarray]]]:
    sim = simulate(np.random.default_rng(11))
    cfg = Settings(db={"url": pg_url}, **settings_for(sim))
    await migrate(pg_url, cfg.db)  # TimescaleDB where the server has it
    await store(pg_url, sim)
    return pg_url, cfg, sim


async def _sections(url: str, cfg: Settings, q: Quarter):  # type: ignore[no-untyped-def]
    conn = await asyncpg.connect(url)
    try:
        ctx = SectionContext(conn, cfg, q, now=NOW)
        return await plants_section(ctx), await regions_section(ctx)
    finally:
        await conn.close()


async def test_unit_figures_equal_the_independent_computation(stored) -> None:  # type: ignore[no-untyped-def]
    """Quarter, substituted, year-to-date, intensities, valid days/months and projection."""
    url, cfg, sim = stored
    plants, _ = await _sections(url, cfg, Quarter(2026, 3))
    data = {u["unit"]: u for u in plants.data["units"]}
    for dev in UNITS:
        want = _expected(sim, dev, Quarter(2026, 3))
        got = data[dev]
        assert got["valid_hours"] == want["valid_h"], dev
        assert got["substituted_h"] == want["substituted_h"], dev
        assert got["quarter_t"] == pytest.approx(want["quarter_t"], abs=0.06), dev
        assert got["substituted_t"] == pytest.approx(want["substituted_t"], abs=0.06), dev
        assert got["ytd_t"] == pytest.approx(want["ytd_t"], abs=0.06), dev
        assert got["completeness"] == pytest.approx(want["completeness"], abs=0.06), dev
        assert got["gross_g_kwh"] == pytest.approx(want["gross"], abs=0.06), dev
        assert got["net_g_kwh"] == pytest.approx(want["net"], abs=0.06), dev
        assert got["valid_days"] == f"{int(want['valid_days'])}/92", dev
        assert got["valid_months"] == f"{int(want['valid_months'])}/3", dev
        assert got["projection_method"] == "seasonal", dev
        assert got["projected_t"] == pytest.approx(want["projected_t"], abs=0.06), dev
        assert got["projected_pm_t"] == pytest.approx(want["pm90"], abs=0.06), dev
        rules = {h["rule"] for h in got["substituted_hours"]}
        assert rules == want["rules"], dev
        # ORD's quarter has ~83 % capture: every hour takes the 2,160-hour maximum
        assert rules == ({"capture_75_90"} if dev == ORD else {"short", "long"}), dev


async def test_levels_follow_the_rules_and_say_why(stored) -> None:  # type: ignore[no-untyped-def]
    """Plant over budget: red; Ordos behind target: red; poor completeness: at least yellow."""
    url, cfg, _ = stored
    plants, regions = await _sections(url, cfg, Quarter(2026, 3))
    units = {r["unit"]: r for r in plants.tables[0].rows}
    plant_rows = {r["name"]: r for r in plants.tables[1].rows}
    region_rows = {r["name"]: r for r in regions.tables[0].rows}
    # OVER: 2026 runs 15 % above 2025 and its budget is 95 % of 2025 -> ~121 %: red
    assert units[OVER]["projected_ratio"] == pytest.approx(121, abs=3)
    assert units[OVER]["level"] == "red"
    assert plant_rows["beifang-power/baotou-plant"]["level"] == "red"
    assert plant_rows["beifang-power/baotou-plant"]["over_budget_t"] > 0
    # the unit without class or budget is said to be so, not skipped, not invented
    assert units[BARE]["class"] == "not benchmarked"
    assert units[BARE]["benchmark_g_kwh"] is None
    assert units[BARE]["budget_t"] is None
    assert units[BARE]["projected_ratio"] is None
    assert "no budget configured" in (units[BARE]["note"] or "")
    assert "default aux power rate 6%" in (units[BARE]["note"] or "")
    assert any(BARE in note for note in plants.notes_en if note.startswith("Not benchmarked"))
    # ORD is fine on budget (120 %) and intensity, but 2026Q3 has ~83 % valid hours: yellow
    assert units[ORD]["completeness"] < 90
    assert units[ORD]["level"] == "yellow"
    warn = {w.source_id: w for w in plants.warnings}
    assert any("valid data" in r for r in warn[ORD].reasons_en)
    # Ordos is behind its target (projected ~111 %): red, and named as lagging
    assert region_rows["Ordos"]["level"] == "red"
    assert region_rows["Baotou"]["projected_ratio"] < 95
    lagging = [n for n in regions.notes_en if "lagging" in n]
    assert lagging == ["Regions lagging behind their target: Ordos"]
    # regional sums are the sums of their units
    assert region_rows["Baotou"]["quarter_t"] == pytest.approx(
        units[OVER]["quarter_t"] + units[BARE]["quarter_t"], abs=0.2
    )
    rwarn = {w.source_id: w.level for w in regions.warnings}
    assert rwarn == {"Baotou": region_rows["Baotou"]["level"], "Ordos": "red", "Wuhai": "orange"}
    assert region_rows["Wuhai"]["quarter_t"] is None
    assert "no CEMS unit is assigned to it" in region_rows["Wuhai"]["note"]
    # the figures are real PNGs
    for fig in [*plants.figures, *regions.figures]:
        assert fig.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert {f.key for f in plants.figures} == {"plants_intensity"}
    assert {f.key for f in regions.figures} == {"regions_trend", "regions_projection"}


async def test_a_quarter_without_data_says_so_and_invents_nothing(stored) -> None:  # type: ignore[no-untyped-def]
    """2024Q2 (before any data) and 2026Q4 (after it): notes say so, every figure is None."""
    url, cfg, _ = stored
    for q in (Quarter(2024, 2), Quarter(2026, 4)):
        plants, regions = await _sections(url, cfg, q)
        assert any(f"No CEMS hourly data in {q}" in n for n in plants.notes_en)
        assert any(f"No CEMS hourly data in {q}" in n for n in regions.notes_en)
        for row in plants.tables[0].rows:
            assert row["quarter_t"] is None
            assert row["ytd_t"] is None
            assert row["projected_t"] is None
            assert row["gross_g_kwh"] is None
            assert row["substituted_h"] == 0
        assert plants.figures == []


async def test_too_few_days_gives_no_projection_in_words(stored) -> None:  # type: ignore[no-untyped-def]
    """Five days of 2026Q4 for one unit: no projection, and the reason is given."""
    url, cfg, _ = stored
    conn = await asyncpg.connect(url)
    try:
        t0 = END
        hours = [t0 + timedelta(hours=k) for k in range(5 * 24)]
        await conn.execute(
            INSERT_DERIVED,
            hours * 2,
            [ORD] * (2 * len(hours)),
            ["co2_mass_t_h_1h"] * len(hours) + ["load_mw_1h"] * len(hours),
            [300.0] * len(hours) + [430.0] * len(hours),
            [True] * (2 * len(hours)),
        )
    finally:
        await conn.close()
    plants, _ = await _sections(url, cfg, Quarter(2026, 4))
    units = {r["unit"]: r for r in plants.tables[0].rows}
    assert units[ORD]["quarter_t"] == pytest.approx(300.0 * 120, abs=0.1)
    assert units[ORD]["projected_t"] is None
    assert "only 5 days with data in the quarter" in units[ORD]["note"]
    # the other units sent nothing in 2026Q4: all 120 hours substituted, marked, no projection
    assert units[OVER]["substituted_h"] == 120
    assert units[OVER]["projected_t"] is None


async def test_a_units_class_in_the_device_registry_is_used(stored) -> None:  # type: ignore[no-untyped-def]
    """BARE has no class in the settings; registered with one, it is benchmarked with it (as
    the detection service takes it), and a registered unit without data is listed, not
    skipped."""
    url, cfg, _ = stored
    conn = await asyncpg.connect(url)
    try:
        reg = RegistryStore(conn)
        await reg.add(
            DeviceRecord(device_id=BARE, kind=SourceKind.CEMS, cems_class="300mw_sc"), None
        )
        silent = "yimeng-power/ordos-plant/unit-9"
        await reg.add(DeviceRecord(device_id=silent, kind=SourceKind.CEMS), None)
    finally:
        await conn.close()
    plants, _ = await _sections(url, cfg, Quarter(2026, 3))
    units = {r["unit"]: r for r in plants.tables[0].rows}
    assert units[BARE]["class"] == "300mw_sc"
    assert units[BARE]["benchmark_g_kwh"] == pytest.approx(
        benchmark_g_co2_kwh(cfg, "300mw_sc"), abs=0.06
    )
    assert units[silent]["class"] == "not benchmarked"
    assert units[silent]["quarter_t"] is None


async def test_a_closed_quarters_silent_tail_is_missing_data(stored) -> None:  # type: ignore[no-untyped-def]
    """Every unit silent for the last 30 hours of a closed quarter: those hours are expected
    and substituted (HJ 75), not cut off by taking the data end as the quarter's end."""
    url, cfg, sim = stored
    before, _ = await _sections(url, cfg, Quarter(2026, 3))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM derived WHERE ts >= $1", END - timedelta(hours=30))
    finally:
        await conn.close()
    after, _ = await _sections(url, cfg, Quarter(2026, 3))
    b = {u["unit"]: u for u in before.data["units"]}
    a = {u["unit"]: u for u in after.data["units"]}
    for dev in UNITS:
        lost = int(sim[dev]["valid"][-30:].sum())  # valid hours among those deleted
        assert a[dev]["expected_hours"] == 92 * 24, dev
        assert a[dev]["valid_hours"] == b[dev]["valid_hours"] - lost, dev
        assert a[dev]["substituted_h"] == b[dev]["substituted_h"] + lost, dev


async def test_a_stopped_units_hours_are_not_substituted(stored) -> None:  # type: ignore[no-untyped-def]
    """48 hours of 2026Q3 in which OVER reported itself stopped (flag F: invalid hours with
    their stopped minutes, as the engine stores them): 0 t, not substituted, out of the
    expected hours and the capture rate (HJ 75-2017), shown as stopped hours."""
    url, cfg, _ = stored
    before, _ = await _sections(url, cfg, Quarter(2026, 3))
    t0 = END - timedelta(days=20)
    hours = [t0 + timedelta(hours=k) for k in range(48)]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE derived SET valid = false, value = NULL WHERE device_id = $1"
            " AND series = 'co2_mass_t_h_1h' AND ts = ANY($2::timestamptz[])",
            OVER,
            hours,
        )
        await conn.execute(
            INSERT_DERIVED,
            hours,
            [OVER] * 48,
            ["stopped_minutes_1h"] * 48,
            [60.0] * 48,
            [True] * 48,
        )
    finally:
        await conn.close()
    after, _ = await _sections(url, cfg, Quarter(2026, 3))
    b = {u["unit"]: u for u in before.data["units"]}[OVER]
    a = {u["unit"]: u for u in after.data["units"]}[OVER]
    assert a["stopped_h"] == 48
    assert a["expected_hours"] == 92 * 24 - 48
    assert a["substituted_h"] == b["substituted_h"]  # none of the 48 is substituted
    assert a["quarter_t"] < b["quarter_t"] - 48 * 0.8 * 400  # those hours emitted nothing


async def test_a_units_own_completeness_requirement_decides_its_level(stored) -> None:  # type: ignore[no-untyped-def]
    """ORD is yellow for ~83 % valid hours against the CEMS 90 %; with its own requirement of
    80 % (targets.completeness_required by device id) the rule passes it; OVER keeps 90 %."""
    url, cfg, _ = stored
    targets = cfg.targets.model_copy(
        update={"completeness_required": {**cfg.targets.completeness_required, ORD: 0.80}}
    )
    own = cfg.model_copy(update={"targets": targets})
    plants, _ = await _sections(url, own, Quarter(2026, 3))
    units = {r["unit"]: r for r in plants.tables[0].rows}
    assert 80 <= units[ORD]["completeness"] < 90
    assert units[ORD]["level"] == "green"
    assert units[OVER]["level"] == "red"
