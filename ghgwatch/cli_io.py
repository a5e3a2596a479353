"""``ghgwatch import FILE`` and ``ghgwatch export``: history in through the readings path,
tables out as CSV or Parquet (see :mod:`ghgwatch.history_io`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from core.errors import GhgwatchError
from core.settings import Settings
from ghgwatch.history_io import export_table, import_file
from wire.schemas import SourceKind

__all__ = ["export_command", "import_command"]

MAX_PROBLEMS_SHOWN = 50


def _settings() -> Settings:
    # The root callback loaded the settings (and remembered --config): this reads the same.
    return Settings()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        transient=False,
    )


def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or HJ 212 dump")],
    kind: Annotated[SourceKind | None, typer.Option(help="Source kind when no kind column")] = None,
    cn: Annotated[
        list[str] | None, typer.Option(help="HJ 212 packets to import (default: live + backfill)")
    ] = None,
) -> None:
    """Import history (wire long-form CSV or HJ 212 text dump): validated, stored once."""
    settings = _settings()
    with _progress() as progress:
        task = progress.add_task(f"importing {file.name}")
        try:
            report = asyncio.run(
                import_file(
                    file, settings, kind=kind, cns=cn, progress=lambda n: progress.advance(task, n)
                )
            )
        except GhgwatchError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc
    typer.echo(
        f"{report.rows} rows read, {report.produced} readings sent, {len(report.problems)} refused"
    )
    for problem in report.problems[:MAX_PROBLEMS_SHOWN]:
        typer.echo(f"line {problem.line}: {problem.reason}: {problem.detail}")
    if len(report.problems) > MAX_PROBLEMS_SHOWN:
        typer.echo(f"... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more")
    if report.problems:
        raise typer.Exit(3)


def export_command(
    table: Annotated[
        Literal["readings", "derived", "detections"], typer.Argument(help="What to export")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file")],
    since: Annotated[datetime, typer.Option(help="From (inclusive, UTC unless an offset)")],
    until: Annotated[datetime | None, typer.Option(help="To (exclusive); default now")] = None,
    device: Annotated[list[str] | None, typer.Option(help="device_id; repeat; default all")] = None,
    fmt: Annotated[
        Literal["csv", "parquet"] | None, typer.Option("--format", help="default: from --out")
    ] = None,
) -> None:
    """Export readings, derived values or detections as CSV or Parquet, streamed."""
    settings = _settings()
    chosen: Literal["csv", "parquet"] = fmt or ("parquet" if out.suffix == ".parquet" else "csv")
    start = since if since.tzinfo else since.replace(tzinfo=UTC)
    end = until or datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    with _progress() as progress:
        task = progress.add_task(f"exporting {table}")
        rows = asyncio.run(
            export_table(
                settings,
                table,
                out,
                devices=device or [],
                since=start,
                until=end,
                fmt=chosen,
                progress=lambda n: progress.advance(task, n),
            )
        )
    typer.echo(f"{rows} rows written to {out}")
