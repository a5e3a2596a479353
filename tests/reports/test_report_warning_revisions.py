"""A source whose level goes back to an earlier one across revisions of the same quarter: each
level change raises its own alert through the real alert service, and a sync with no change
(or a revision that changes no level) raises nothing. Also the store's side of it: which
revision a level holds since, and the published marker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from alerts import AlertService
from core.settings import Settings
from reports import issue_quarterly
from reports.issue import sync_alerts
from reports.store import (
    PublishedAlert,
    active_alerts,
    latest_report,
    level_since,
    mark_cleared,
    mark_published,
)
from tests.alerts.conftest import wait_until
from tests.reports import report_sim as simdata
from tests.reports.report_sim import BUERTAI, Q

TARGETS = {"city_baseline_ppm": {"baotou": 9.0},
           "mine_allowed_exceedance_h": {"ordos-coal/buertai": 2.0}}  # fmt: skip
MINE = "quarterly/2026Q3/mine/ordos-coal/buertai/"
LATE = (BUERTAI[1], simdata.local(2026, 9, 20, 0), simdata.local(2026, 9, 20, 10))


async def _sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def _mine_alerts(url: str) -> list[tuple[str, str]]:
    """buertai's quarterly alerts, oldest first: (level, state)."""
    rows = await _sql(
        url,
        "SELECT device_id, state FROM alerts WHERE detector = 'quarterly_warning'"
        " AND device_id LIKE $1 ORDER BY alert_id",
        MINE + "%",
    )
    return [(r["device_id"].removeprefix(MINE), r["state"]) for r in rows]


async def test_orange_red_orange_raises_three_alerts_and_a_sync_after_none(
    sim_url: str,
    alert_settings: Callable[..., Settings],
    running: Callable[..., asyncio.Task[Any]],
    tmp_path: Path,
) -> None:
    """buertai: orange (r1) -> red (r2, late alarm) -> orange (r3, the alarm withdrawn). The
    return to orange is a new warning (a new alert), not revision 1's id seen again; then a
    sync, a no-change scheduled check and a revision with the same levels publish nothing."""
    base = alert_settings(resolve_hold_s=0.1)
    s = base.model_copy(update={
        "reports": base.reports.model_copy(update={"out_dir": tmp_path, "pdf": False}),
        "targets": base.targets.model_copy(update=TARGETS),
    })  # fmt: skip
    stop = asyncio.Event()
    running(AlertService(s).run(stop=stop), stop)

    first = await issue_quarterly(s, Q, publish=True)
    assert first.report.levels()["mine:ordos-coal/buertai"] == "orange"
    assert (first.alerts_opened, first.alerts_cleared) == (4, 0)
    await wait_until(lambda: _until(sim_url, [("orange", "open")]), "orange alert", timeout_s=30)

    conn = await asyncpg.connect(sim_url)
    try:  # late data: a 10-hour alarm at buertai
        await simdata.add_alarm(conn, *LATE)
    finally:
        await conn.close()
    red = await issue_quarterly(s, Q, publish=True, only_if_changed=True)
    assert red.issued is not None
    assert red.issued.revision == 2
    assert red.report.levels()["mine:ordos-coal/buertai"] == "red"
    assert (red.alerts_opened, red.alerts_cleared) == (1, 1)
    await wait_until(
        lambda: _until(sim_url, [("orange", "resolved"), ("red", "open")]),
        "red alert opened, orange resolved",
        timeout_s=30,
    )

    # the late alarm is withdrawn (a false alarm): buertai is back at orange
    await _sql(
        sim_url, "DELETE FROM detections WHERE detection_id = $1",
        f"{LATE[0]}|threshold_alarm|{LATE[1].isoformat()}",
    )  # fmt: skip
    back = await issue_quarterly(s, Q, publish=True, only_if_changed=True)
    assert back.issued is not None
    assert back.issued.revision == 3
    assert back.report.levels()["mine:ordos-coal/buertai"] == "orange"
    assert (back.alerts_opened, back.alerts_cleared) == (1, 1)
    await wait_until(
        lambda: _until(sim_url, [("orange", "resolved"), ("red", "resolved"), ("orange", "open")]),
        "a new orange alert, red resolved",
        timeout_s=30,
    )

    # nothing changed: no sync publishes anything, however often it runs
    for _ in range(2):
        unchanged = await issue_quarterly(s, Q, publish=True, only_if_changed=True)
        assert unchanged.unchanged
        assert (unchanged.alerts_opened, unchanged.alerts_cleared) == (0, 0)
    conn = await asyncpg.connect(sim_url)
    try:
        latest = await latest_report(conn, str(Q))
        assert latest is not None
        assert latest.revision == 3
        assert await sync_alerts(conn, s, Q, latest) == (0, 0)
    finally:
        await conn.close()
    # a revision that changes no level raises nothing either
    same = await issue_quarterly(s, Q, publish=True)
    assert same.issued is not None
    assert same.issued.revision == 4
    assert (same.alerts_opened, same.alerts_cleared) == (0, 0)

    published = await _sql(
        sim_url,
        "SELECT level, r.revision, cleared_at IS NULL AS active FROM quarterly_warning_alerts a"
        " JOIN quarterly_reports r USING (report_id)"
        " WHERE a.source_type = 'mine' AND a.source_id = 'ordos-coal/buertai'"
        " ORDER BY published_at, r.revision",
    )
    assert [tuple(r) for r in published] == [
        ("orange", 1, False), ("red", 2, False), ("orange", 3, True),
    ]  # fmt: skip
    await asyncio.sleep(0.5)  # anything published late would have reached the service by now
    assert len(await _mine_alerts(sim_url)) == 3
    total = await _sql(sim_url, "SELECT count(*) FROM alerts WHERE detector = 'quarterly_warning'")
    assert total[0][0] == 6  # the other three sources' alerts, once each


async def _until(url: str, want: list[tuple[str, str]]) -> bool:
    return await _mine_alerts(url) == want


async def _stored(conn: asyncpg.Connection, revision: int, levels: dict[str, str]) -> int:
    """A bare stored revision of Q with ``levels`` (source id -> level, mines)."""
    report_id: int = await conn.fetchval(
        """INSERT INTO quarterly_reports (quarter, revision, trigger, data_from, data_to,
               settings, levels, report, html)
           VALUES ($1, $2, 'on_demand', $3, $4, '{}', '{}', '{}', '') RETURNING report_id""",
        str(Q), revision, Q.start(simdata.TZ), Q.end(simdata.TZ),
    )  # fmt: skip
    await conn.executemany(
        """INSERT INTO quarterly_warnings (report_id, quarter, revision, source_type,
               source_id, level, reasons_zh, reasons_en, figures)
           VALUES ($1, $2, $3, 'mine', $4, $5, '{}', '{}', '{}')""",
        [(report_id, str(Q), revision, sid, lv) for sid, lv in levels.items()],
    )
    return report_id


async def test_level_since_names_the_revision_that_changed_the_level(alert_db: str) -> None:
    """m1: orange, red, orange, orange -> since 3; m2 absent from r2 -> its run restarts at
    r3; m3 green throughout -> 1."""
    conn = await asyncpg.connect(alert_db)
    try:
        ids = [
            await _stored(conn, 1, {"a/m1": "orange", "a/m2": "red", "a/m3": "green"}),
            await _stored(conn, 2, {"a/m1": "red", "a/m3": "green"}),
            await _stored(conn, 3, {"a/m1": "orange", "a/m2": "red", "a/m3": "green"}),
            await _stored(conn, 4, {"a/m1": "orange", "a/m2": "red", "a/m3": "green"}),
        ]
        assert await level_since(conn, ids[0]) == {
            ("mine", "a/m1"): 1, ("mine", "a/m2"): 1, ("mine", "a/m3"): 1,
        }  # fmt: skip
        assert (await level_since(conn, ids[1]))[("mine", "a/m1")] == 2
        assert await level_since(conn, ids[3]) == {
            ("mine", "a/m1"): 3, ("mine", "a/m2"): 3, ("mine", "a/m3"): 1,
        }  # fmt: skip
    finally:
        await conn.close()


async def test_publishing_a_cleared_id_again_marks_it_active(alert_db: str) -> None:
    """The published marker says what was last published: a warning published again under an
    id once cleared is active, so the next sync does not publish it once more."""
    conn = await asyncpg.connect(alert_db)
    try:
        report_id = await _stored(conn, 1, {"a/m1": "orange"})
        alert = PublishedAlert("d1", "mine", "a/m1", "orange")
        await mark_published(conn, str(Q), report_id, [alert])
        await mark_cleared(conn, ["d1"])
        assert await active_alerts(conn, str(Q)) == []
        await mark_published(conn, str(Q), report_id, [alert])
        assert await active_alerts(conn, str(Q)) == [alert]
    finally:
        await conn.close()
