"""Assemble the quarterly report: refresh the daily aggregates, run every section builder,
merge the warnings per source.

:data:`SECTION_BUILDERS` is the registry of builders, in report order. Each is an async
``SectionContext -> Section``; a builder that fails does not sink the report: its section
says so in words and the failure is logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from pydantic import BaseModel, Field

from reports.aggregates import refresh_daily, refresh_derived_daily
from reports.cities import TREND_QUARTERS, cities_section
from reports.completeness import completeness_section
from reports.mines import mines_section
from reports.model import (
    LEVEL_ORDER,
    Level,
    Quarter,
    Section,
    SectionBuilder,
    SectionContext,
    SourceWarning,
    worst_level,
)
from reports.plants import plants_section, regions_section

__all__ = ["SECTION_BUILDERS", "Report", "build_report", "merge_warnings", "warning_key"]

log = structlog.get_logger(__name__)

SECTION_BUILDERS: list[SectionBuilder] = [
    plants_section,
    regions_section,
    cities_section,
    mines_section,
    completeness_section,
]


class Report(BaseModel):
    """One quarter's report as built (before it is stored: ``revision`` is set on issue)."""

    quarter: str
    revision: int | None = None
    generated_at: datetime
    timezone: str
    data_from: datetime
    data_to: datetime
    has_data: bool
    sections: list[Section] = Field(default_factory=list)
    warnings: list[SourceWarning] = Field(default_factory=list)
    notes_zh: list[str] = Field(default_factory=list)
    notes_en: list[str] = Field(default_factory=list)

    def levels(self) -> dict[str, Level]:
        """``source_type:source_id`` -> level, for every source of the report."""
        return {warning_key(w): w.level for w in self.warnings}

    def worst(self) -> Level:
        """The most severe level of any source."""
        return worst_level([w.level for w in self.warnings])


def warning_key(w: SourceWarning) -> str:
    """The stable key of a source across revisions."""
    return f"{w.source_type}:{w.source_id}"


def merge_warnings(sections: Sequence[Section]) -> list[SourceWarning]:
    """One warning per source: the worst level of its sections, all reasons, all figures.

    Returned worst first, then by source.
    """
    merged: dict[str, SourceWarning] = {}
    for section in sections:
        for w in section.warnings:
            key = warning_key(w)
            have = merged.get(key)
            if have is None:
                merged[key] = w.model_copy(deep=True)
                continue
            have.level = worst_level([have.level, w.level])
            have.reasons_zh.extend(r for r in w.reasons_zh if r not in have.reasons_zh)
            have.reasons_en.extend(r for r in w.reasons_en if r not in have.reasons_en)
            have.figures.update({k: v for k, v in w.figures.items() if k not in have.figures})
            have.region = have.region or w.region
    return sorted(
        merged.values(), key=lambda w: (-LEVEL_ORDER[w.level], w.source_type, w.source_id)
    )


def _failed(builder: SectionBuilder, exc: Exception) -> Section:
    name = getattr(builder, "__name__", "section")
    return Section(
        key=name.removesuffix("_section"),
        title_zh=f"{name}(失败)",
        title_en=f"{name} (failed)",
        notes_zh=[f"本节未能生成:{type(exc).__name__}"],
        notes_en=[f"This section could not be built: {type(exc).__name__}: {exc}"],
    )


async def build_report(
    conn: asyncpg.Connection,
    settings: Any,
    quarter: Quarter,
    *,
    builders: Sequence[SectionBuilder] | None = None,
    progress: Callable[[str], None] | None = None,
    refresh: bool = True,
) -> Report:
    """Build the report of ``quarter`` from stored data.

    Steps:

    1. unless ``refresh`` is False, rebuild the daily aggregates of the quarter (readings)
       and of the cities' five-quarter trend window (derived enhancement);
    2. run every builder (default :data:`SECTION_BUILDERS`) on one :class:`SectionContext`;
    3. merge the warnings per source.

    Args:
        conn: an open connection to a migrated database.
        settings: the ghgwatch settings (``reports``, and ``targets`` when present).
        quarter: the quarter.
        builders: the section builders, in order.
        progress: called with a short line as each step starts.
        refresh: rebuild the daily aggregates first.

    Returns:
        The report (not stored, not rendered).
    """
    cfg = settings.reports
    tz = cfg.timezone
    say = progress or (lambda _m: None)
    start, end = quarter.start(tz), quarter.end(tz)
    if refresh:
        say("daily aggregates: readings")
        await refresh_daily(conn, start, end, tz, dict(cfg.min_valid_readings_per_hour))
        say("daily aggregates: city enhancement")
        first = quarter
        for _ in range(TREND_QUARTERS - 1):
            first = first.previous()
        await refresh_derived_daily(conn, first.start(tz), end, tz)
    ctx = SectionContext(conn=conn, settings=settings, quarter=quarter, tz=tz, progress=say)
    sections = []
    for builder in builders if builders is not None else SECTION_BUILDERS:
        try:
            sections.append(await builder(ctx))
        except (asyncpg.PostgresError, ValueError, KeyError, ZeroDivisionError) as exc:
            log.exception("report section failed", section=getattr(builder, "__name__", "?"))
            sections.append(_failed(builder, exc))
    has_data = any(bool(s.data.get("has_data")) for s in sections)
    report = Report(
        quarter=str(quarter),
        generated_at=datetime.now(UTC),
        timezone=tz,
        data_from=start,
        data_to=end,
        has_data=has_data,
        sections=sections,
        warnings=merge_warnings(sections),
    )
    if not has_data:
        report.notes_zh.append(f"{quarter} 没有任何已存储的数据:本报告无数字可报。")
        report.notes_en.append(
            f"No data is stored for {quarter}: this report has no figures to give."
        )
    return report
