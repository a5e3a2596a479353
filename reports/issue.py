"""Issue a quarterly report: build, store as the next revision, write the files, raise the
orange and red warnings as alerts.

Order, so that nothing is announced that is not stored:

1. build the report (:func:`reports.report.build_report`);
2. with ``only_if_changed``, stop when the quarter's newest revision has the same level for
   every source (late data that changes no level makes no revision);
3. store it as the next revision, with its HTML and JSON, in one transaction;
4. write ``<out_dir>/<quarter>-r<revision>.html`` / ``.json`` (and ``.pdf`` with Chromium);
5. with ``publish``, bring the alerts in line with the newest revision
   (:func:`sync_alerts`): publish to Kafka first, record what was published after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from adapters.pgerrors import pg_errors
from core.settings import Settings
from reports.model import Quarter, SectionBuilder
from reports.render import render_html, render_json, write_pdf
from reports.report import Report, build_report
from reports.store import (
    IssuedReport,
    active_alerts,
    latest_report,
    latest_warnings,
    level_since,
    mark_cleared,
    mark_published,
    store_report,
)
from reports.warnings_out import plan_alerts, publish_records

__all__ = ["IssueResult", "issue_quarterly", "settings_used", "sync_alerts"]

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 600.0


@dataclass(slots=True)
class IssueResult:
    """What issuing did."""

    report: Report
    issued: IssuedReport | None
    files: list[Path] = field(default_factory=list)
    alerts_opened: int = 0
    alerts_cleared: int = 0
    pdf_note: str | None = None

    @property
    def unchanged(self) -> bool:
        """No new revision: every level was as in the newest one."""
        return self.issued is None


# The detection settings the CEMS figures depend on: unit classes and benchmarks, the
# emission factor behind them, the sites (pressure, altitude, analyser basis, aux power rate)
# and the HJ 76 valid-hour rule the hourly series were derived with.
_DETECTION_USED = (
    "cems_sites",
    "cems_unit_class",
    "cems_benchmarks_g_sce_kwh",
    "co2_t_per_t_sce",
    "cems_default_aux_power_frac",
    "min_valid_minutes",
)


def settings_used(settings: Settings) -> dict[str, Any]:
    """The settings a report depends on, as stored with it."""
    out: dict[str, Any] = {"reports": settings.reports.model_dump(mode="json")}
    targets = getattr(settings, "targets", None)
    if targets is not None:
        out["targets"] = targets.model_dump(mode="json")
    out["detection"] = settings.detection.model_dump(mode="json", include=set(_DETECTION_USED))
    return out


async def sync_alerts(
    conn: asyncpg.Connection, settings: Settings, quarter: Quarter, issued: IssuedReport
) -> tuple[int, int]:
    """Raise the newest revision's orange and red warnings not raised yet; clear superseded.

    Returns:
        ``(opened, cleared)`` record counts.
    """
    warnings = await latest_warnings(conn, issued.report_id)
    since = await level_since(conn, issued.report_id)
    active = await active_alerts(conn, str(quarter))
    opens, clears = plan_alerts(
        quarter, settings.reports.timezone, warnings, since, active, datetime.now(UTC)
    )
    if not opens and not clears:
        return 0, 0
    await publish_records(settings, [r for _, r in opens] + [r for _, r in clears])
    await mark_published(conn, str(quarter), issued.report_id, [a for a, _ in opens])
    await mark_cleared(conn, [d for d, _ in clears])
    log.info("quarterly warnings published", quarter=str(quarter), opened=len(opens),
             cleared=len(clears))  # fmt: skip
    return len(opens), len(clears)


def _write_files(
    report: Report, html: str, js: str, out_dir: Path, pdf: bool
) -> tuple[list[Path], str | None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report.quarter}-r{report.revision}"
    html_path, json_path = out_dir / f"{stem}.html", out_dir / f"{stem}.json"
    html_path.write_text(html, encoding="utf-8")
    json_path.write_text(js, encoding="utf-8")
    files, note = [html_path, json_path], None
    if pdf:
        pdf_path = out_dir / f"{stem}.pdf"
        try:
            if write_pdf(html_path, pdf_path):
                files.append(pdf_path)
            else:
                note = "no PDF: chromium is not installed"
        except (RuntimeError, OSError) as exc:
            note = f"no PDF: {exc}"
    return files, note


async def issue_quarterly(
    settings: Settings,
    quarter: Quarter,
    *,
    trigger: str = "on_demand",
    out_dir: Path | None = None,
    pdf: bool | None = None,
    publish: bool = False,
    only_if_changed: bool = False,
    builders: Sequence[SectionBuilder] | None = None,
    progress: Callable[[str], None] | None = None,
) -> IssueResult:
    """Build and issue the report of ``quarter`` (see the module docstring for the order).

    Args:
        settings: the ghgwatch settings.
        quarter: the quarter.
        trigger: ``on_demand`` (CLI) or ``schedule``.
        out_dir: where the files go (default ``reports.out_dir``, else
            ``data_dir/reports``).
        pdf: write a PDF too (default ``reports.pdf``).
        publish: raise the orange and red warnings as alerts.
        only_if_changed: issue no revision when no source's level changed.
        builders: the section builders (default the registry).
        progress: called with a short line per step.

    Returns:
        The report, the stored revision (None when unchanged) and what was written.
    """
    cfg = settings.reports
    say = progress or (lambda _m: None)
    with pg_errors("connect for the quarterly report"):
        conn = await asyncpg.connect(
            settings.db_url(), timeout=CONNECT_TIMEOUT_S, command_timeout=QUERY_TIMEOUT_S
        )
    try:
        with pg_errors("quarterly report"):
            report = await build_report(conn, settings, quarter, builders=builders, progress=say)
            latest = await latest_report(conn, str(quarter))
            if only_if_changed and latest is not None and latest.levels == report.levels():
                say(f"{quarter}: no level changed since revision {latest.revision}")
                result = IssueResult(report, None)
                if publish:
                    result.alerts_opened, result.alerts_cleared = await sync_alerts(
                        conn, settings, quarter, latest
                    )
                return result
            say("storing the report")
            rendered: dict[str, str] = {}

            def render(r: Report) -> tuple[str, str]:
                rendered["html"], rendered["json"] = render_html(r), render_json(r)
                return rendered["html"], rendered["json"]

            issued = await store_report(
                conn, report, render=render, settings_used=settings_used(settings),
                trigger=trigger,
            )  # fmt: skip
            say("writing the files")
            files, note = _write_files(
                report,
                rendered["html"],
                rendered["json"],
                out_dir or cfg.out_dir or settings.data_dir / "reports",
                cfg.pdf if pdf is None else pdf,
            )
            result = IssueResult(report, issued, files, pdf_note=note)
            if publish:
                say("raising orange and red warnings as alerts")
                result.alerts_opened, result.alerts_cleared = await sync_alerts(
                    conn, settings, quarter, issued
                )
            log.info("quarterly report issued", quarter=str(quarter), revision=issued.revision,
                     trigger=trigger, worst=report.worst())  # fmt: skip
            return result
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)
