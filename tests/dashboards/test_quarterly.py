"""The quarterly-status dashboard's queries run against issued reports and show the levels,
budget use and projection the report decided."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from core.settings import DbSettings, Settings
from processors.storage import migrate
from reports import issue_quarterly
from tests.dashboards.test_dashboard_queries import _panels, _queries, expand
from tests.reports import cems_sim
from tests.reports import report_sim as simdata

UID = "ghgwatch-quarterly"


@pytest.fixture
async def issued_db(pg_url: str, settings_factory: Callable[..., Settings], tmp_path: Path) -> str:
    """Two revisions of 2026Q3 issued by the real sections over the report simulation and
    seven quarters of CEMS unit-hours (a plant over budget, a region lagging its target)."""
    await migrate(pg_url, DbSettings())  # TimescaleDB where the server has it
    conn = await asyncpg.connect(pg_url)
    try:
        await simdata.write(conn, simdata.build())
    finally:
        await conn.close()
    units = cems_sim.simulate(np.random.default_rng(11))
    await cems_sim.store(pg_url, units)
    cems = cems_sim.settings_for(units)
    s = settings_factory(
        reports={"out_dir": str(tmp_path), "pdf": False},
        targets={"mine_allowed_exceedance_h": {"ordos-coal/buertai": 2.0}, **cems["targets"]},
        detection=cems["detection"],
    )
    for _ in range(2):  # two revisions
        await issue_quarterly(s, simdata.Q)
    return pg_url


def _board(repo_root: Path) -> dict[str, Any]:
    path = repo_root / "deploy" / "grafana" / "dashboards" / f"{UID}.json"
    return dict(json.loads(path.read_text()))


async def _rows(url: str, board: dict[str, Any], title: str) -> list[asyncpg.Record]:
    now = datetime.now(UTC)
    panel = next(p for p in _panels(board) if p["title"] == title)
    sql = expand(panel["targets"][0]["rawSql"], now - timedelta(hours=6), now,
                 {"quarter": ["2026Q3"]})  # fmt: skip
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def test_every_quarterly_panel_and_variable_returns_rows(
    issued_db: str, repo_root: Path
) -> None:
    """The quarter variable lists 2026Q3; each panel's query runs and returns rows."""
    board = _board(repo_root)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(issued_db)
    try:
        (var,) = board["templating"]["list"]
        assert [r[0] for r in await conn.fetch(var["query"])] == ["2026Q3"]
        checked = 0
        for title, _panel, target in _queries(board):
            sql = expand(target["rawSql"], now - timedelta(hours=6), now, {"quarter": ["2026Q3"]})
            rows = await conn.fetch(sql)
            assert rows, f"{title} returned no rows\n{sql}"
            checked += 1
    finally:
        await conn.close()
    assert checked == 6


async def test_panels_show_the_newest_revisions_levels_budget_and_projection(
    issued_db: str, repo_root: Path
) -> None:
    """Mines: buertai orange with 5.5 h against 2 h allowed. Budgets, from the real plants and
    regions sections: the figures are the report's own (its stored JSON), the over-budget
    unit and plant rank first, the lagging region shows its use and projection, a region
    without a plant shows its target and no invented projection. Revisions newest first."""
    board = _board(repo_root)
    mines = {r["source"]: r for r in await _rows(issued_db, board, "Mines and gas sites")}
    assert mines["ordos-coal/buertai"]["level"] == "orange"
    assert mines["ordos-coal/buertai"]["exceedance_h"] == pytest.approx(5.5)
    assert mines["ordos-coal/buertai"]["allowed_h"] == 2.0
    assert mines["baotou-coal/hadamen"]["level"] == "red"
    conn = await asyncpg.connect(issued_db)
    try:
        doc = json.loads(await conn.fetchval(
            "SELECT report FROM quarterly_reports ORDER BY revision DESC LIMIT 1"))  # fmt: skip
    finally:
        await conn.close()
    sections = {sec["key"]: sec for sec in doc["sections"]}
    report_units = {u["unit"]: u for u in sections["plants"]["data"]["units"]}
    report_regions = {r["name"]: r for r in sections["regions"]["data"]["regions"]}
    budget = {r["source"]: r for r in await _rows(issued_db, board, "Budget use and projection")}
    over = budget[cems_sim.OVER]
    assert over["budget_t"] == pytest.approx(report_units[cems_sim.OVER]["budget_t"], rel=1e-3)
    assert over["ytd_t"] == pytest.approx(report_units[cems_sim.OVER]["ytd_t"], rel=1e-3)
    assert over["projection_t"] == pytest.approx(
        report_units[cems_sim.OVER]["projected_t"], rel=1e-3
    )
    assert over["budget_use_pct"] == pytest.approx(100 * over["ytd_t"] / over["budget_t"])
    assert over["projection_of_budget_pct"] == pytest.approx(121, abs=3)
    ranked = list(budget)
    assert set(ranked[:2]) == {cems_sim.OVER, "beifang-power/baotou-plant"}
    assert cems_sim.BARE not in budget  # no budget: not in the budget panel
    regions = {r["source"]: r for r in await _rows(issued_db, board, "Regions and cities")}
    ordos = regions["Ordos"]
    assert ordos["level"] == "red"
    assert ordos["projection_t"] == pytest.approx(report_regions["Ordos"]["projected_t"], rel=1e-3)
    assert ordos["budget_use_pct"] == pytest.approx(
        100 * report_regions["Ordos"]["ytd_t"] / report_regions["Ordos"]["budget_t"], rel=1e-3
    )
    assert regions["Wuhai"]["projection_t"] is None  # a target, no plant: nothing invented
    units = {r["source"]: r for r in await _rows(issued_db, board, "Plants and CEMS units")}
    o = units[cems_sim.OVER]
    assert o["projection_low_t"] < o["projection_t"] < o["projection_high_t"]
    assert o["valid_pct"] == pytest.approx(report_units[cems_sim.OVER]["completeness"], abs=0.06)
    assert o["substituted_h"] == report_units[cems_sim.OVER]["substituted_h"] > 0
    revisions = await _rows(issued_db, board, "Revisions issued")
    assert [r["revision"] for r in revisions] == [2, 1]
    levels = {r["metric"]: r["value"] for r in await _rows(
        issued_db, board, "Sources per warning level")}  # fmt: skip
    assert levels["red"] >= 3
    assert levels["orange"] >= 2
