"""The quarterly-status dashboard: warning levels per region, plant and mine, budget use and
the year's projection, from the newest revision of the selected quarter's report.

It reads what ``reports`` stores (``quarterly_reports``, ``quarterly_warnings``); the figures
of a source are its ``figures`` JSON: the CEMS side's plant and region sections give
``budget_t``, ``ytd_t``, ``projection_t``, ``projection_low_t``, ``projection_high_t``,
``budget_use_pct``, ``valid_share`` and ``substituted_h``; the mines section
``exceedance_h``, ``allowed_h``, ``releases``, ``ack_median_min``, ``silent_h``; the
completeness section ``valid_share``.
"""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.models import dashboard as dash_m

from dashboards.panels import PG_DATASOURCE_UID, W_HALF, Board, DeviceFilter

__all__ = ["quarterly_dashboard"]

_DESCRIPTION = (
    "The quarterly carbon early warning (issue 10): each source's level (green, yellow,"
    " orange, red) with its reasons, budget use and the year's projection, from the newest"
    " revision of the selected quarter's report."
)
_PG = dash_m.DataSourceRef(type_val="grafana-postgresql-datasource", uid=PG_DATASOURCE_UID)
# The newest revision of the selected quarter.
_LATEST = """latest AS (
          SELECT report_id FROM quarterly_reports WHERE quarter IN ($quarter)
          ORDER BY revision DESC LIMIT 1
        )"""
_LEVEL_RANK = "CASE w.level WHEN 'red' THEN 0 WHEN 'orange' THEN 1 WHEN 'yellow' THEN 2 ELSE 3 END"


def _num(key: str) -> str:
    return f"(w.figures ->> '{key}')::float8"


def _warnings(types: str, columns: str) -> str:
    return f"""
        WITH {_LATEST}
        SELECT w.source_id AS source, w.level, {columns},
               array_to_string(w.reasons_en, '; ') AS reasons
        FROM quarterly_warnings w JOIN latest USING (report_id)
        WHERE w.source_type IN ({types})
        ORDER BY {_LEVEL_RANK}, w.source_id
        """


def quarterly_dashboard() -> dash_b.Dashboard:
    """The quarterly-status dashboard."""
    b = Board("ghgwatch-quarterly", "Quarterly carbon early warning", _DESCRIPTION,
              ["quarterly"], DeviceFilter(None, []))  # fmt: skip
    b.dashboard = b.dashboard.with_variable(
        dash_b.QueryVariable("quarter")
        .label("Quarter")
        .datasource(_PG)
        .query("SELECT DISTINCT quarter FROM quarterly_reports ORDER BY 1 DESC")
        .refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dash_m.VariableSort.ALPHABETICAL_DESC)
    )
    b.stat(
        "Sources per warning level",
        "How many sources (units, plants, regions, cities, mines, gas sites, stations) the"
        " newest revision put at each level.",
        f"""
        WITH {_LATEST}
        SELECT w.level AS metric, count(*) AS value
        FROM quarterly_warnings w JOIN latest USING (report_id)
        GROUP BY w.level ORDER BY min({_LEVEL_RANK})
        """,
        unit="none",
        width=W_HALF,
    )
    b.table(
        "Revisions issued",
        "Every revision of the selected quarter: a revision is issued when late data changes"
        " a warning level.",
        """
        SELECT r.revision, r.issued_at, r.trigger,
               (SELECT count(*) FROM quarterly_warnings w WHERE w.report_id = r.report_id
                  AND w.level IN ('orange', 'red')) AS alerts
        FROM quarterly_reports r WHERE r.quarter IN ($quarter)
        ORDER BY r.revision DESC
        """,
        width=W_HALF,
    )
    b.table(
        "Regions and cities",
        "Each league/city's level: the region against its target (CEMS side) and the city's"
        " urban CO2 enhancement against its baseline and a year ago.",
        _warnings(
            "'region', 'city'",
            f"{_num('budget_use_pct')} AS budget_use_pct, {_num('projection_t')} AS"
            f" projection_t, {_num('mean_ppm')} AS enhancement_ppm, {_num('yoy_pct')} AS yoy_pct",
        ),
    )
    b.table(
        "Plants and CEMS units",
        "Each plant's and unit's level, its budget use so far and the projected year's total"
        " (with its range), the share of valid hours and the hours substituted (HJ 75-2017"
        " 12.2) in the quarter.",
        _warnings(
            "'plant', 'unit'",
            f"{_num('budget_t')} AS budget_t, {_num('ytd_t')} AS ytd_t,"
            f" {_num('budget_use_pct')} AS budget_use_pct, {_num('projection_t')} AS"
            f" projection_t, {_num('projection_low_t')} AS projection_low_t,"
            f" {_num('projection_high_t')} AS projection_high_t,"
            f" 100 * {_num('valid_share')} AS valid_pct, {_num('substituted_h')} AS"
            " substituted_h",
        ),
    )
    b.table(
        "Mines and gas sites",
        "Each site's level: hours at the alarm level against those allowed, gas releases,"
        " the median minutes to acknowledge, silent-sensor hours and valid hours.",
        _warnings(
            "'mine', 'leak_site'",
            f"{_num('exceedance_h')} AS exceedance_h, {_num('allowed_h')} AS allowed_h,"
            f" {_num('releases')} AS releases, {_num('ack_median_min')} AS ack_median_min,"
            f" {_num('silent_h')} AS silent_h, 100 * {_num('valid_share')} AS valid_pct",
        ),
    )
    b.table(
        "Budget use and projection",
        "Plants, units and regions with a budget or target: emitted so far, the budget, its"
        " use, and the year's projection against it.",
        f"""
        WITH {_LATEST}
        SELECT w.source_type, w.source_id AS source, w.level, {_num("ytd_t")} AS ytd_t,
               {_num("budget_t")} AS budget_t, {_num("budget_use_pct")} AS budget_use_pct,
               {_num("projection_t")} AS projection_t,
               100 * {_num("projection_t")} / nullif({_num("budget_t")}, 0)
                 AS projection_of_budget_pct
        FROM quarterly_warnings w JOIN latest USING (report_id)
        WHERE w.figures ->> 'budget_t' IS NOT NULL
        ORDER BY projection_of_budget_pct DESC NULLS LAST
        """,
    )
    return b.dashboard
