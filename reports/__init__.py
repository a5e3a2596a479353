"""Quarterly carbon early warning: emission accounting, analysis, warning levels and reports."""

from reports.issue import IssueResult, issue_quarterly, sync_alerts
from reports.model import (
    LEVEL_ORDER,
    Column,
    Figure,
    Level,
    Quarter,
    QuarterFormatError,
    Section,
    SectionBuilder,
    SectionContext,
    SourceWarning,
    Table,
    worst_level,
)
from reports.report import SECTION_BUILDERS, Report, build_report
from reports.schedule import ReportScheduler, closed_quarter
from reports.store import get_report, latest_report, list_reports

__all__ = [
    "LEVEL_ORDER",
    "SECTION_BUILDERS",
    "Column",
    "Figure",
    "IssueResult",
    "Level",
    "Quarter",
    "QuarterFormatError",
    "Report",
    "ReportScheduler",
    "Section",
    "SectionBuilder",
    "SectionContext",
    "SourceWarning",
    "Table",
    "build_report",
    "closed_quarter",
    "get_report",
    "issue_quarterly",
    "latest_report",
    "list_reports",
    "sync_alerts",
    "worst_level",
]
