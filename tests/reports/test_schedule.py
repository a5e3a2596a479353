"""The quarterly schedule: each closed quarter issued after the delay, a revision only when
late data changes a level, and the alert-service process running it by itself."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from core.settings import Settings
from reports import Quarter, ReportScheduler, closed_quarter
from tests.alerts.conftest import alert_db
from tests.reports import report_sim as simdata
from tests.reports.report_sim import BUERTAI, local

__all__ = ["alert_db"]

TZ = "Asia/Shanghai"


def test_a_quarter_is_due_only_after_the_delay_for_late_data() -> None:
    """2026Q3 closes 2026-10-01 00:00 local; with 72 h delay it is due from 10-04 00:00."""
    assert closed_quarter(local(2026, 10, 3, 23, 59), TZ, 72) == Quarter(2026, 2)
    assert closed_quarter(local(2026, 10, 4, 0, 0), TZ, 72) == Quarter(2026, 3)
    assert closed_quarter(local(2027, 1, 1, 0, 0), TZ, 0) == Quarter(2026, 4)


async def _revisions(url: str) -> list[tuple[str, int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT quarter, revision, trigger FROM quarterly_reports ORDER BY quarter, revision"
        )
    finally:
        await conn.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_scheduler_issues_after_close_and_revises_on_changed_levels(
    alert_db: str,
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """Before the delay only 2026Q2 (and Q1, re-checked) are issued; after it 2026Q3; a tick
    with nothing new issues nothing; late data that turns buertai red makes revision 2."""
    conn = await asyncpg.connect(alert_db)
    try:
        await simdata.write(conn, simdata.build())
    finally:
        await conn.close()
    s = settings_factory(
        reports={
            "publish_alerts": False,
            "pdf": False,
            "out_dir": str(tmp_path),
        },
        targets={"mine_allowed_exceedance_h": {"ordos-coal/buertai": 2.0}},
    )
    now = [local(2026, 10, 2)]
    scheduler = ReportScheduler(s, clock=lambda: now[0])
    await scheduler.tick()
    assert await _revisions(alert_db) == [("2026Q1", 1, "schedule"), ("2026Q2", 1, "schedule")]
    now[0] = local(2026, 10, 5)
    await scheduler.tick()
    await scheduler.tick()
    assert await _revisions(alert_db) == [
        ("2026Q1", 1, "schedule"), ("2026Q2", 1, "schedule"), ("2026Q3", 1, "schedule"),
    ]  # fmt: skip
    conn = await asyncpg.connect(alert_db)
    try:
        await simdata.add_alarm(conn, BUERTAI[1], local(2026, 9, 20, 0), local(2026, 9, 20, 10))
    finally:
        await conn.close()
    results = await scheduler.tick()
    assert (await _revisions(alert_db))[-1] == ("2026Q3", 2, "schedule")
    assert results[0].report.levels()["mine:ordos-coal/buertai"] == "red"
    assert results[1].unchanged  # 2026Q2: nothing changed there


async def test_alert_service_process_issues_the_closed_quarter_by_itself(
    alert_db: str,
    kafka_bootstrap: str,
    test_id: str,
    tmp_path: Path,
) -> None:
    """`ghgwatch alert-service` runs the schedule: the last closed quarter's report is stored
    (trigger schedule) without anyone asking."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env |= {
        "GHGWATCH_DB__URL": alert_db,
        "GHGWATCH_KAFKA__BOOTSTRAP": kafka_bootstrap,
        "GHGWATCH_KAFKA__DETECTIONS_TOPIC": f"detections-{test_id}",
        "GHGWATCH_ALERTS__GROUP_ID": f"alerts-{test_id}",
        "GHGWATCH_METRICS__ENABLED": "false",
        "GHGWATCH_REPORTS__OUT_DIR": str(tmp_path),
        "GHGWATCH_REPORTS__PDF": "false",
        "GHGWATCH_REPORTS__REVISE_QUARTERS": "0",
        "GHGWATCH_REPORTS__START_DELAY_S": "0",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghgwatch", "alert-service", "--timeout-s", "20",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    due = closed_quarter(datetime.now(UTC), TZ, Settings().reports.issue_delay_h)
    try:
        for _ in range(200):
            if any(q == str(due) for q, _r, _t in await _revisions(alert_db)):
                break
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert (str(due), 1, "schedule") in await _revisions(alert_db), err.decode()[-2000:]


async def test_a_crashing_report_never_stops_the_loop_it_shares(
    settings_factory: Callable[..., Settings],
) -> None:
    """A report that raises is logged and retried at the next interval; run() ends only on
    stop, so the alert service it runs beside keeps paging."""
    calls: list[Quarter] = []

    async def broken(_settings: Settings, quarter: Quarter, **_kw: object) -> None:
        calls.append(quarter)
        raise RuntimeError("a bug in a section builder")

    s = settings_factory(reports={"check_interval_s": 0.05, "start_delay_s": 0})
    stop = asyncio.Event()
    task = asyncio.create_task(ReportScheduler(s, issuer=broken).run(stop))  # type: ignore[arg-type]
    for _ in range(200):
        if len(calls) >= 3:  # three checks (each stops at its first failure)
            break
        await asyncio.sleep(0.02)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(calls) >= 3
