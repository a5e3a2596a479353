"""``ghgwatch report``: issue a quarterly report on demand, list and show issued ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.settings import Settings
from ghgwatch.cli_errors import exit_on_error
from reports import Quarter, QuarterFormatError, get_report, issue_quarterly, list_reports

__all__ = ["register_report_cli", "report_app"]

report_app = typer.Typer(help="Quarterly carbon early warning reports.", no_args_is_help=True)
# The root CLI's settings loader, given by register_report_cli (this module never imports cli).
_GET_SETTINGS: list[Callable[[], Settings]] = []


def register_report_cli(app: typer.Typer, get_settings: Callable[[], Settings]) -> None:
    """Add ``ghgwatch report`` to the root CLI, with the root's settings loader."""
    _GET_SETTINGS[:] = [get_settings]
    app.add_typer(report_app, name="report")


def _settings() -> Settings:
    return _GET_SETTINGS[0]()


def _run(coro: object) -> object:
    with exit_on_error():
        return asyncio.run(coro)  # type: ignore[arg-type]


@report_app.command("quarterly")
def quarterly(
    quarter: Annotated[str, typer.Argument(help="The quarter, YYYYQn, e.g. 2026Q3.")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the files.")] = None,
    pdf: Annotated[bool | None, typer.Option("--pdf/--no-pdf", help="Also a PDF.")] = None,
    alerts: Annotated[
        bool, typer.Option("--alerts/--no-alerts", help="Raise orange/red warnings as alerts.")
    ] = False,
) -> None:
    """Build and issue the report of a quarter (the next revision if one exists)."""
    try:
        q = Quarter.parse(quarter)
    except QuarterFormatError as exc:
        raise typer.BadParameter(str(exc), param_hint="QUARTER") from None
    settings = _settings()
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"{q}: starting", total=None)

        def say(msg: str) -> None:
            progress.update(task, description=f"{q}: {msg}")

        result = _run(
            issue_quarterly(settings, q, out_dir=out, pdf=pdf, publish=alerts, progress=say)
        )
    assert result is not None
    issued = result.issued  # type: ignore[attr-defined]
    rep = result.report  # type: ignore[attr-defined]
    typer.echo(f"issued {q} revision {issued.revision} (report id {issued.report_id})")
    for path in result.files:  # type: ignore[attr-defined]
        typer.echo(f"wrote {path}")
    if result.pdf_note:  # type: ignore[attr-defined]
        typer.echo(result.pdf_note)  # type: ignore[attr-defined]
    if not rep.has_data:
        typer.echo(rep.notes_en[0])
    counts = {lvl: sum(1 for w in rep.warnings if w.level == lvl) for lvl in
              ("red", "orange", "yellow", "green")}  # fmt: skip
    typer.echo("levels: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


async def _with_conn(settings: Settings, fn: object) -> object:
    conn = await asyncpg.connect(settings.db_url(), timeout=10)
    try:
        return await fn(conn)  # type: ignore[operator]
    finally:
        await conn.close()


@report_app.command("list")
def list_cmd(
    quarter: Annotated[str | None, typer.Option(help="Only this quarter.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Issued reports, newest first."""
    settings = _settings()
    rows = _run(_with_conn(settings, lambda c: list_reports(c, quarter)))
    assert isinstance(rows, list)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    table = Table("id", "quarter", "revision", "issued", "trigger", "warnings", "alerts")
    for r in rows:
        table.add_row(str(r["report_id"]), r["quarter"], str(r["revision"]),
                      r["issued_at"].isoformat(timespec="seconds"), r["trigger"],
                      str(r["warnings"]), str(r["alerts"]))  # fmt: skip
    Console().print(table)


@report_app.command("show")
def show_cmd(
    report_id: int,
    as_json: Annotated[bool, typer.Option("--json", help="The report's JSON version.")] = False,
    html: Annotated[Path | None, typer.Option(help="Write the stored HTML here.")] = None,
) -> None:
    """One issued report: its summary, or its JSON, or its HTML to a file."""
    settings = _settings()
    row = _run(_with_conn(settings, lambda c: get_report(c, report_id)))
    if row is None:
        typer.secho(f"no report with id {report_id}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    assert isinstance(row, dict)
    if html is not None:
        html.write_text(row["html"], encoding="utf-8")
        typer.echo(f"wrote {html}")
        return
    if as_json:
        typer.echo(json.dumps(row["report"], ensure_ascii=False, indent=2))
        return
    typer.echo(f"report {row['report_id']}: {row['quarter']} revision {row['revision']}, "
               f"issued {row['issued_at']:%Y-%m-%d %H:%M} ({row['trigger']})")  # fmt: skip
    typer.echo(f"data {row['data_from']} – {row['data_to']}")
    for w in row["report"]["warnings"]:
        if w["level"] != "green":
            typer.echo(f"  {w['level']:<6} {w['source_type']} {w['source_id']}: "
                       + "; ".join(w["reasons_en"]))  # fmt: skip
