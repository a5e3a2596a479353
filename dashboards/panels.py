"""Panel builders: datasources, SQL targets, variables, panels and the detections overlay.

Every dashboard module composes these, so a panel's shape (size, legend, thresholds, the
PostgreSQL target Grafana stores) is written once. The SQL targets use only Grafana's
PostgreSQL macros (``$__timeFilter``, ``$__timeGroupAlias``, ``$__timeFrom()``,
``$__timeTo()``, ``$__interval``, ``$__interval_ms``) and the dashboards' variables, so they
run on TimescaleDB and on plain PostgreSQL alike.
"""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog import variants as cog_variants
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

PG_DATASOURCE_UID = "ghgwatch-pg"
PROMETHEUS_DATASOURCE_UID = "ghgwatch-prom"
PG = dash_m.DataSourceRef(type_val="grafana-postgresql-datasource", uid=PG_DATASOURCE_UID)
PROM = dash_m.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_DATASOURCE_UID)
# A device silent for longer than this is listed as silent (matches detection's gap default).
SILENT_AFTER = "5 minutes"
# HJ 76: an hour is valid with at least 45 valid minutes.
VALID_HOUR_MINUTES = 45
W_FULL, W_HALF, W_THIRD = 24, 12, 8
H_GRAPH, H_TABLE, H_STAT = 9, 9, 5

Format = Literal["time_series", "table"]


class SqlTarget(cog_variants.Dataquery):
    """A raw-SQL query of the Grafana PostgreSQL datasource (the SDK has no model for it)."""

    def __init__(self, ref_id: str, raw_sql: str, fmt: Format) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it."""
        return {
            "datasource": PG.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class Sql(cog_builder.Builder[cog_variants.Dataquery]):
    def __init__(self, raw_sql: str, fmt: Format = "time_series", ref_id: str = "A") -> None:
        self._target = SqlTarget(ref_id, dedent_sql(raw_sql), fmt)

    def build(self) -> cog_variants.Dataquery:
        return self._target


def dedent_sql(sql: str) -> str:
    """Drop blank edge lines and common indentation, so stored SQL reads well in Grafana."""
    lines = [line.rstrip() for line in sql.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x), default=0)
    return "\n".join(x[indent:] for x in lines)


# --- variables ------------------------------------------------------------------------------


def query_var(name: str, label: str, sql: str, *, include_all: bool = True) -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .datasource(PG)
        .query(dedent_sql(sql))
        .refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(include_all)
        .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
    )


def device_variables(
    kind_sql: str, network: str, site: str, device: str
) -> list[dash_b.QueryVariable]:
    """network -> site -> device, each filtered by the ones before it."""
    return [
        query_var("network", network, f"SELECT DISTINCT network FROM devices WHERE {kind_sql}"),
        query_var(
            "site",
            site,
            f"SELECT DISTINCT site FROM devices WHERE {kind_sql} AND network IN ($network)",
        ),
        query_var(
            "device",
            device,
            f"""
            SELECT DISTINCT device_id FROM devices
            WHERE {kind_sql} AND network IN ($network) AND site IN ($site)
            """,
        ),
    ]


def devices_where(kind_sql: str) -> str:
    return (
        f"{kind_sql} AND d.network IN ($network) AND d.site IN ($site) AND d.device_id IN ($device)"
    )


# --- panels ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PanelIds:
    next_id: int = 1

    def take(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def thresholds(steps: Iterable[tuple[float | None, str]]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=v, color=c) for v, c in steps])
    )


def graph(
    ids: PanelIds,
    title: str,
    description: str,
    sql: str,
    *,
    unit: str,
    width: int = W_HALF,
    lines: Iterable[tuple[float | None, str]] = (),
    time_from: str | None = None,
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PG)
        .with_target(Sql(sql))
        .unit(unit)
        .span(width)
        .height(H_GRAPH)
        .line_width(1)
        .fill_opacity(0)
        .show_points(common_m.VisibilityMode.NEVER)
        .legend(
            common_b.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
        )
    )
    steps = list(lines)
    if steps:
        panel = panel.thresholds(thresholds(steps)).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common_m.GraphTresholdsStyleMode.DASHED)
        )
    if time_from is not None:
        panel = panel.time_from(time_from)
    return panel


def table(
    ids: PanelIds, title: str, description: str, sql: str, *, width: int = W_FULL
) -> table_b.Panel:
    return (
        table_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PG)
        .with_target(Sql(sql, "table"))
        .span(width)
        .height(H_TABLE)
    )


def stat(
    ids: PanelIds, title: str, description: str, sql: str, *, unit: str, width: int = W_THIRD
) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PG)
        .with_target(Sql(sql, "table"))
        .unit(unit)
        .span(width)
        .height(H_STAT)
        # One stat per row (per city, ...), named by the row's text column.
        .reduce_options(common_b.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .text_mode(common_m.BigValueTextMode.VALUE_AND_NAME)
    )


def prom_graph(
    ids: PanelIds, title: str, description: str, exprs: list[tuple[str, str]], *, unit: str
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PROM)
        .unit(unit)
        .span(W_HALF)
        .height(H_GRAPH)
    )
    for i, (expr, legend) in enumerate(exprs):
        panel = panel.with_target(
            prom_b.Dataquery()
            .datasource(PROM)
            .ref_id(chr(ord("A") + i))
            .expr(expr)
            .legend_format(legend)
        )
    return panel


def dashboard(uid: str, title: str, description: str, tags: list[str]) -> dash_b.Dashboard:
    return (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["ghgwatch", *tags])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .editable()
    )


# --- the dashboards -------------------------------------------------------------------------

WEIGHTED_AVG = "sum(r.avg * r.count) / nullif(sum(r.count), 0)"


def detections_where(kind: str, *, with_location: bool = False) -> str:
    where = (
        f"x.kind = '{kind}' AND x.network IN ($network) AND x.site IN ($site)"
        " AND x.device_id IN ($device)"
    )
    if with_location:
        where += " AND coalesce(x.location, 'other') IN ($location)"
    return where


class _SqlAnnotationTarget(dash_m.AnnotationTarget):
    """An annotation query of the PostgreSQL datasource (the SDK's model has no rawSql)."""

    def __init__(self, raw_sql: str) -> None:
        super().__init__()
        self.raw_sql = raw_sql

    def to_json(self) -> dict[str, object]:
        return SqlTarget("Anno", self.raw_sql, "table").to_json()


class _SqlAnnotation(cog_builder.Builder[dash_m.AnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._target = _SqlAnnotationTarget(dedent_sql(raw_sql))

    def build(self) -> dash_m.AnnotationTarget:
        return self._target


def with_detections(d: dash_b.Dashboard, ids: PanelIds, where: str) -> dash_b.Dashboard:
    """Detections overlaid on every graph (annotations) and listed in a table."""
    annotation = (
        dash_b.AnnotationQuery()
        .name("Detections")
        .datasource(PG)
        .enable(True)
        .icon_color("red")
        .target(
            _SqlAnnotation(
                f"""
                SELECT x.started_at AS time, x.ended_at AS timeend,
                       x.severity || ' ' || x.detector || ': ' || x.device_id || ' '
                         || x.metric || ' = ' || round(x.value::numeric, 3) AS text,
                       x.severity || ',' || x.detector AS tags
                FROM detections x
                WHERE $__timeFilter(x.started_at) AND {where}
                ORDER BY x.started_at
                """
            )
        )
    )
    return d.annotation(annotation).with_panel(
        table(
            ids,
            "Detections",
            "Open detections first, then those that started in the selected range (newest"
            " first), as the detection service stored them.",
            f"""
            SELECT x.started_at, x.ended_at, x.severity, x.detector, x.device_id, x.metric,
                   x.value, x.threshold, x.location
            FROM detections x
            WHERE (x.ended_at IS NULL OR $__timeFilter(x.started_at)) AND {where}
            ORDER BY x.ended_at IS NULL DESC, x.started_at DESC
            LIMIT 100
            """,
        )
    )
