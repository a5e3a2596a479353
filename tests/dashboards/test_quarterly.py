"""The quarterly-status dashboard's queries run against issued reports and show the levels,
budget use and projection the report decided."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.settings import DbSettings, Settings
from processors.storage import migrate
from reports import SECTION_BUILDERS, Section, SectionContext, SourceWarning, issue_quarterly
from tests.dashboards.test_dashboard_queries import _panels, _queries, expand
from tests.reports import report_sim as simdata

UID = "ghgwatch-quarterly"


async def _budget_section(ctx: SectionContext) -> Section:
    """Stands in for the CEMS side's plant and region sections (merged later): a plant and a
    region with the budget figures those sections give."""
    plant = {"budget_t": 1.0e6, "ytd_t": 8.1e5, "budget_use_pct": 81.0, "projection_t": 1.08e6,
             "projection_low_t": 1.02e6, "projection_high_t": 1.14e6}  # fmt: skip
    region = {"budget_t": 5.0e7, "ytd_t": 3.0e7, "budget_use_pct": 60.0, "projection_t": 4.1e7}
    return Section(
        key="plants", title_zh="电厂", title_en="Plants",
        warnings=[
            SourceWarning(source_type="plant", source_id="beifang/dalate", region="ordos",
                          level="orange", reasons_en=["over budget"], figures=plant),
            SourceWarning(source_type="region", source_id="ordos", region="ordos",
                          level="green", figures=region),
        ],
        data={"has_data": True},
    )  # fmt: skip


@pytest.fixture
async def issued_db(pg_url: str, settings_factory: Callable[..., Settings], tmp_path: Path) -> str:
    await migrate(pg_url, DbSettings(), timescale=False)
    conn = await asyncpg.connect(pg_url)
    try:
        await simdata.write(conn, simdata.build())
    finally:
        await conn.close()
    allowed = {"ordos-coal/buertai": 2.0}
    s = settings_factory(
        reports={"out_dir": str(tmp_path), "pdf": False},
        targets={"mine_allowed_exceedance_h": allowed},
    )
    for _ in range(2):  # two revisions
        await issue_quarterly(s, simdata.Q, builders=[_budget_section, *SECTION_BUILDERS])
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
    """Mines: buertai orange with 5.5 h against 2 h allowed; budget: the plant's projection
    108 % of its budget; revisions: both listed, newest first."""
    board = _board(repo_root)
    mines = {r["source"]: r for r in await _rows(issued_db, board, "Mines and gas sites")}
    assert mines["ordos-coal/buertai"]["level"] == "orange"
    assert mines["ordos-coal/buertai"]["exceedance_h"] == pytest.approx(5.5)
    assert mines["ordos-coal/buertai"]["allowed_h"] == 2.0
    assert mines["baotou-coal/hadamen"]["level"] == "red"
    budget = await _rows(issued_db, board, "Budget use and projection")
    assert [r["source"] for r in budget] == ["beifang/dalate", "ordos"]
    assert budget[0]["projection_of_budget_pct"] == pytest.approx(108.0)
    revisions = await _rows(issued_db, board, "Revisions issued")
    assert [r["revision"] for r in revisions] == [2, 1]
    levels = {r["metric"]: r["value"] for r in await _rows(
        issued_db, board, "Sources per warning level")}  # fmt: skip
    assert levels["red"] >= 3
    assert levels["orange"] >= 2
