"""Issued reports in the database: each quarter's revisions, their warnings, and which
orange and red warnings were raised as alerts. This module owns that SQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from reports.model import SourceWarning
from reports.report import Report

__all__ = [
    "IssuedReport",
    "PublishedAlert",
    "active_alerts",
    "get_report",
    "latest_report",
    "latest_warnings",
    "level_since",
    "list_reports",
    "mark_cleared",
    "mark_published",
    "store_report",
]

# pg_advisory_xact_lock(key, hashtext(quarter)): one issuer per quarter at a time.
_LOCK_KEY = 0x71727074  # "qrpt"


@dataclass(frozen=True, slots=True)
class IssuedReport:
    """A stored report's identity and its levels per source."""

    report_id: int
    quarter: str
    revision: int
    issued_at: datetime
    trigger: str
    levels: dict[str, str]


@dataclass(frozen=True, slots=True)
class PublishedAlert:
    """An orange or red warning published as a detection and not yet superseded."""

    detection_id: str
    source_type: str
    source_id: str
    level: str


def _issued(r: asyncpg.Record) -> IssuedReport:
    return IssuedReport(
        r["report_id"], r["quarter"], r["revision"], r["issued_at"], r["trigger"],
        json.loads(r["levels"]),
    )  # fmt: skip


async def store_report(
    conn: asyncpg.Connection,
    report: Report,
    *,
    render: Callable[[Report], tuple[str, str]],
    settings_used: dict[str, Any],
    trigger: str,
) -> IssuedReport:
    """Store ``report`` as the quarter's next revision, with its warnings, in one transaction.

    Args:
        conn: an open connection.
        report: the built report; its ``revision`` is set here.
        render: ``report -> (html, json)``, called once the revision is known.
        settings_used: the settings the report was built with.
        trigger: ``schedule`` or ``on_demand``.

    Returns:
        The stored report's id, revision and levels.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_KEY,
                           report.quarter)  # fmt: skip
        rev = await conn.fetchval(
            "SELECT coalesce(max(revision), 0) + 1 FROM quarterly_reports WHERE quarter = $1",
            report.quarter,
        )
        report.revision = int(rev)
        html, json_text = render(report)
        row = await conn.fetchrow(
            """INSERT INTO quarterly_reports (quarter, revision, trigger, data_from, data_to,
                   settings, levels, report, html)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, $9)
               RETURNING report_id, quarter, revision, issued_at, trigger, levels::text""",
            report.quarter,
            report.revision,
            trigger,
            report.data_from,
            report.data_to,
            json.dumps(settings_used),
            json.dumps(report.levels()),
            json_text,
            html,
        )
        assert row is not None
        await conn.copy_records_to_table(
            "quarterly_warnings",
            records=[
                (
                    row["report_id"],
                    report.quarter,
                    report.revision,
                    w.source_type,
                    w.source_id,
                    w.region,
                    w.level,
                    w.reasons_zh,
                    w.reasons_en,
                    json.dumps(w.figures),
                )
                for w in report.warnings
            ],
            columns=[
                "report_id",
                "quarter",
                "revision",
                "source_type",
                "source_id",
                "region",
                "level",
                "reasons_zh",
                "reasons_en",
                "figures",
            ],
        )
    return _issued(row)


async def latest_report(conn: asyncpg.Connection, quarter: str) -> IssuedReport | None:
    """The quarter's newest revision, or None when none was issued."""
    row = await conn.fetchrow(
        """SELECT report_id, quarter, revision, issued_at, trigger, levels::text
           FROM quarterly_reports WHERE quarter = $1 ORDER BY revision DESC LIMIT 1""",
        quarter,
    )
    return None if row is None else _issued(row)


async def latest_warnings(conn: asyncpg.Connection, report_id: int) -> list[SourceWarning]:
    """The warnings stored with a report."""
    rows = await conn.fetch(
        """SELECT source_type, source_id, region, level, reasons_zh, reasons_en, figures::text
           FROM quarterly_warnings WHERE report_id = $1""",
        report_id,
    )
    return [
        SourceWarning(
            source_type=r["source_type"], source_id=r["source_id"], region=r["region"],
            level=r["level"], reasons_zh=list(r["reasons_zh"]), reasons_en=list(r["reasons_en"]),
            figures=json.loads(r["figures"]),
        )
        for r in rows
    ]  # fmt: skip


async def level_since(conn: asyncpg.Connection, report_id: int) -> dict[tuple[str, str], int]:
    """For each source of a report, the revision its level has held since.

    That is the first revision of the run of revisions, ending with this report, in which the
    source had the level it has here; a revision without the source breaks the run. So the
    key ``(source type, source id) -> revision`` names the revision that changed the level,
    and stays the same for every later revision that keeps it.
    """
    rows = await conn.fetch(
        """SELECT cur.source_type, cur.source_id,
                  (SELECT min(r.revision) FROM quarterly_reports r
                    WHERE r.quarter = cur.quarter AND r.revision <= cur.revision
                      AND r.revision > coalesce((
                          SELECT max(p.revision) FROM quarterly_reports p
                          LEFT JOIN quarterly_warnings pw ON pw.report_id = p.report_id
                               AND pw.source_type = cur.source_type
                               AND pw.source_id = cur.source_id
                          WHERE p.quarter = cur.quarter AND p.revision < cur.revision
                            AND pw.level IS DISTINCT FROM cur.level), 0)) AS since
           FROM quarterly_warnings cur WHERE cur.report_id = $1""",
        report_id,
    )
    return {(r["source_type"], r["source_id"]): int(r["since"]) for r in rows}


async def list_reports(
    conn: asyncpg.Connection, quarter: str | None = None
) -> list[dict[str, Any]]:
    """Every issued report (newest first), without its bodies."""
    rows = await conn.fetch(
        """SELECT r.report_id, r.quarter, r.revision, r.issued_at, r.trigger, r.data_from,
                  r.data_to,
                  (SELECT count(*) FROM quarterly_warnings w
                    WHERE w.report_id = r.report_id AND w.level IN ('orange', 'red')) AS alerts,
                  (SELECT count(*) FROM quarterly_warnings w
                    WHERE w.report_id = r.report_id AND w.level <> 'green') AS warnings
           FROM quarterly_reports r
           WHERE $1::text IS NULL OR r.quarter = $1
           ORDER BY r.quarter DESC, r.revision DESC""",
        quarter,
    )
    return [dict(r) for r in rows]


async def get_report(conn: asyncpg.Connection, report_id: int) -> dict[str, Any] | None:
    """One issued report with its JSON and HTML, or None."""
    row = await conn.fetchrow(
        """SELECT report_id, quarter, revision, issued_at, trigger, data_from, data_to,
                  settings::text, levels::text, report::text, html
           FROM quarterly_reports WHERE report_id = $1""",
        report_id,
    )
    if row is None:
        return None
    out = dict(row)
    for key in ("settings", "levels", "report"):
        out[key] = json.loads(out[key])
    return out


async def active_alerts(conn: asyncpg.Connection, quarter: str) -> list[PublishedAlert]:
    """The quarter's published warnings a later revision has not superseded."""
    rows = await conn.fetch(
        """SELECT detection_id, source_type, source_id, level FROM quarterly_warning_alerts
           WHERE quarter = $1 AND cleared_at IS NULL""",
        quarter,
    )
    return [PublishedAlert(r[0], r[1], r[2], r[3]) for r in rows]


async def mark_published(
    conn: asyncpg.Connection, quarter: str, report_id: int, alerts: list[PublishedAlert]
) -> None:
    """Record warnings published to the alert service as active (idempotent).

    A detection id already recorded is active again: it was just published, so it must not be
    published again at the next sync (a cleared row left as it was would be, at every one).
    """
    await conn.executemany(
        """INSERT INTO quarterly_warning_alerts
               (detection_id, quarter, source_type, source_id, level, report_id)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (detection_id) DO UPDATE SET cleared_at = NULL""",
        [(a.detection_id, quarter, a.source_type, a.source_id, a.level, report_id)
         for a in alerts],
    )  # fmt: skip


async def mark_cleared(conn: asyncpg.Connection, detection_ids: list[str]) -> None:
    """Record that published warnings were superseded (their cleared records sent)."""
    await conn.execute(
        "UPDATE quarterly_warning_alerts SET cleared_at = now()"
        " WHERE detection_id = ANY ($1::text[]) AND cleared_at IS NULL",
        detection_ids,
    )
