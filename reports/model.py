"""The shapes a quarterly report is made of: the quarter, sections, tables, figures, warnings.

Each part of the analysis (plants and regions, cities, mines, completeness) is a *section
builder*: an async function that reads stored data for one quarter and returns a
:class:`Section`. The report assembles the sections, renders them (HTML, PDF, JSON) and
stores what it issued. Builders never render and renderers never query.

Quarters are calendar quarters in the report's time zone (China Standard Time by default):
``2026Q3`` runs from 2026-07-01 00:00 to 2026-10-01 00:00 local time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel, Field

__all__ = [
    "LEVEL_ORDER",
    "Cell",
    "Column",
    "Figure",
    "Level",
    "Quarter",
    "QuarterFormatError",
    "Section",
    "SectionBuilder",
    "SectionContext",
    "SourceWarning",
    "Table",
    "worst_level",
]

Level = Literal["green", "yellow", "orange", "red"]
LEVEL_ORDER: dict[Level, int] = {"green": 0, "yellow": 1, "orange": 2, "red": 3}

_QUARTER = re.compile(r"(\d{4})[Qq]([1-4])")
_DEFAULT_TZ = "Asia/Shanghai"


class QuarterFormatError(ValueError):
    """A quarter string that is not ``YYYYQn``."""


@dataclass(frozen=True, order=True)
class Quarter:
    """A calendar quarter, e.g. ``Quarter(2026, 3)`` for July to September 2026."""

    year: int
    q: int

    @classmethod
    def parse(cls, text: str) -> Quarter:
        """``"2026Q3"`` → ``Quarter(2026, 3)``; anything else raises with the expected format."""
        m = _QUARTER.fullmatch(text.strip())
        if m is None:
            raise QuarterFormatError(
                f"unknown quarter {text!r}: expected YYYYQn with n 1-4, e.g. 2026Q3"
            )
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.year}Q{self.q}"

    def start(self, tz: str = _DEFAULT_TZ) -> datetime:
        """First instant of the quarter in ``tz`` (aware)."""
        return datetime(self.year, 3 * self.q - 2, 1, tzinfo=ZoneInfo(tz))

    def end(self, tz: str = _DEFAULT_TZ) -> datetime:
        """First instant after the quarter in ``tz`` (aware, exclusive)."""
        return self.next().start(tz)

    def year_start(self, tz: str = _DEFAULT_TZ) -> datetime:
        """First instant of the quarter's calendar year (year-to-date figures start here)."""
        return datetime(self.year, 1, 1, tzinfo=ZoneInfo(tz))

    def next(self) -> Quarter:
        return Quarter(self.year + 1, 1) if self.q == 4 else Quarter(self.year, self.q + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - 1, 4) if self.q == 1 else Quarter(self.year, self.q - 1)

    def year_ago(self) -> Quarter:
        return Quarter(self.year - 1, self.q)

    def hours(self, tz: str = _DEFAULT_TZ) -> int:
        """Number of hours in the quarter."""
        return int((self.end(tz) - self.start(tz)) / timedelta(hours=1))


Cell = float | int | str | None


class Column(BaseModel):
    """A table column: key in each row, headings in Chinese and English, unit if any."""

    key: str
    title_zh: str
    title_en: str
    unit: str | None = None


class Table(BaseModel):
    """A table of a section. ``rows`` map column keys to values; ``None`` prints as a dash."""

    key: str
    title_zh: str
    title_en: str
    columns: list[Column]
    rows: list[dict[str, Cell]] = Field(default_factory=list)
    note_zh: str | None = None
    note_en: str | None = None


class Figure(BaseModel):
    """A rendered plot (PNG bytes, embedded in the HTML as a data URI)."""

    key: str
    title_zh: str
    title_en: str
    png: bytes


SourceType = Literal["unit", "plant", "region", "city", "mine", "leak_site", "device"]


class SourceWarning(BaseModel):
    """A warning level for one source in one quarter, with the reasons in words.

    ``source_id`` is stable across revisions (device id, site, region name), so a revision of
    the report that changes the level can be told from one that does not.
    """

    source_type: SourceType
    source_id: str
    region: str | None = None
    level: Level
    reasons_zh: list[str] = Field(default_factory=list)
    reasons_en: list[str] = Field(default_factory=list)
    figures: dict[str, float | None] = Field(
        default_factory=dict, description="The numbers the level was decided on"
    )


class Section(BaseModel):
    """One part of the report, built from stored data by a :data:`SectionBuilder`.

    ``notes`` say in words what could not be computed (no data, no budget, too few days);
    a builder never invents a number to fill a gap.
    """

    key: str
    title_zh: str
    title_en: str
    tables: list[Table] = Field(default_factory=list)
    figures: list[Figure] = Field(default_factory=list)
    warnings: list[SourceWarning] = Field(default_factory=list)
    notes_zh: list[str] = Field(default_factory=list)
    notes_en: list[str] = Field(default_factory=list)
    data: dict[str, Any] = Field(
        default_factory=dict, description="Machine-readable figures for the JSON report"
    )


@dataclass
class SectionContext:
    """What a section builder gets: a connection, the settings and the quarter."""

    conn: asyncpg.Connection
    settings: Any  # core.settings.Settings; Any keeps this module free of the settings import
    quarter: Quarter
    tz: str = _DEFAULT_TZ
    progress: Callable[[str], None] = field(default=lambda _msg: None)
    now: datetime | None = None  # whether the quarter has closed; None: the clock


SectionBuilder = Callable[[SectionContext], Awaitable[Section]]


def worst_level(levels: list[Level]) -> Level:
    """The most severe of ``levels`` (green for none)."""
    return max(levels, key=LEVEL_ORDER.__getitem__, default="green")
