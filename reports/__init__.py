"""Quarterly carbon early warning: emission accounting, analysis, warning levels and reports."""
