"""Panel builders: datasources, SQL targets, device variables, panels and the detections overlay.

Every dashboard module composes these, so a panel's shape (size, legend, thresholds, the
PostgreSQL target Grafana stores) and the usual query shapes are written once. The SQL targets
use only Grafana's PostgreSQL macros (``$__timeFilter``, ``$__timeGroupAlias``,
``$__timeFrom()``, ``$__timeTo()``, ``$__interval``, ``$__interval_ms``) and the dashboards'
variables, so they run on TimescaleDB and on plain PostgreSQL alike.
"""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import geomap as geomap_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog import variants as cog_variants
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

__all__ = [
    "ALERT_TAGS",
    "PG_DATASOURCE_UID",
    "PROMETHEUS_DATASOURCE_UID",
    "READINGS_1M",
    "SILENT_AFTER",
    "VALID_HOUR_MINUTES",
    "WEIGHTED_AVG",
    "W_FULL",
    "W_HALF",
    "W_THIRD",
    "Board",
    "DeviceFilter",
    "Level",
    "SqlTarget",
    "dedent_sql",
    "device_levels",
    "series_sql",
]

PG_DATASOURCE_UID = "ghgwatch-pg"
PROMETHEUS_DATASOURCE_UID = "ghgwatch-prom"
_PG = dash_m.DataSourceRef(type_val="grafana-postgresql-datasource", uid=PG_DATASOURCE_UID)
_PROM = dash_m.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_DATASOURCE_UID)
_GRAFANA = dash_m.DataSourceRef(type_val="grafana", uid="-- Grafana --")
# The tags every alert annotation carries (alerts.grafana.annotation_tags); a dashboard's
# tag query shows them, narrowed by a tag of its own kind (``kind:mine``) when it has one.
ALERT_TAGS = ("ghgwatch", "alert")
# A device silent for longer than this is listed as silent (matches detection's gap default).
SILENT_AFTER = "5 minutes"
# HJ 76: an hour is valid with at least 45 valid minutes.
VALID_HOUR_MINUTES = 45
# Panel widths and heights in Grafana grid units (24 columns).
W_FULL, W_HALF, W_THIRD = 24, 12, 8
_H_GRAPH, _H_TABLE, _H_STAT = 9, 9, 5
# The 1-minute aggregates with their device, as most panels read them.
READINGS_1M = "readings_1m r JOIN devices d USING (device_id)"
# Mean of 1-minute means weighted by their reading counts.
WEIGHTED_AVG = "sum(r.avg * r.count) / nullif(sum(r.count), 0)"

Format = Literal["time_series", "table"]
Line = tuple[float | None, str]
_Panel = TypeVar("_Panel", ts_b.Panel, table_b.Panel, stat_b.Panel, geomap_b.Panel)


class SqlTarget(cog_variants.Dataquery):
    """A raw-SQL query of the Grafana PostgreSQL datasource (the SDK has no model for it).

    Args:
        ref_id: the query's reference within its panel.
        raw_sql: the query text, macros and variables unexpanded.
        fmt: whether Grafana reads the rows as time series or as a table.
    """

    def __init__(self, ref_id: str, raw_sql: str, fmt: Format) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it."""
        return {
            "datasource": _PG.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class _Sql(cog_builder.Builder[cog_variants.Dataquery]):
    def __init__(self, raw_sql: str, fmt: Format = "time_series", ref_id: str = "A") -> None:
        self._target = SqlTarget(ref_id, dedent_sql(raw_sql), fmt)

    def build(self) -> cog_variants.Dataquery:
        return self._target


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


class _Fixed(cog_builder.Builder[dash_m.AnnotationTarget]):
    def __init__(self, target: dash_m.AnnotationTarget) -> None:
        self._target = target

    def build(self) -> dash_m.AnnotationTarget:
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


def series_sql(
    source: str,
    time_col: str,
    label: str,
    value: str,
    where: str | None = None,
    *,
    interval: str = "$__interval",
) -> str:
    """A time series per label: ``value`` grouped by time bucket and ``label``.

    Args:
        source: the ``FROM`` clause (e.g. :data:`READINGS_1M`).
        time_col: the time column, bucketed and filtered by the dashboard's range.
        label: the series name of each row.
        value: the aggregate, with its alias (``avg(x.value) AS co2_t_h``).
        where: further conditions, if any.
        interval: the bucket width (default: Grafana's for the range and panel width).

    Returns:
        The query text.
    """
    cond = f"$__timeFilter({time_col})" + ("" if where is None else f" AND {where}")
    return f"""
        SELECT $__timeGroupAlias({time_col}, {interval}), {label} AS metric,
               {value}
        FROM {source}
        WHERE {cond}
        GROUP BY 1, 2 ORDER BY 1, 2
        """


@dataclass(frozen=True, slots=True)
class Level:
    """One level of a dashboard's device selection: a variable and the column it filters.

    Attributes:
        name: the variable's name (``$name`` in queries).
        label: what the dashboard shows beside it.
        column: the column of ``devices`` (and ``detections``) it selects, ``{t}`` standing
            for the table alias, e.g. ``coalesce({t}location, 'other')``.
    """

    name: str
    label: str
    column: str

    def col(self, alias: str) -> str:
        """The column with a table alias (``""`` for none)."""
        return self.column.format(t=f"{alias}." if alias else "")


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """The cascading device selection of a dashboard: each level filtered by those before it.

    Attributes:
        kind: the source kind the dashboard is about, ``None`` for all kinds.
        levels: the variables, outermost first (network, then site, ...).
    """

    kind: str | None
    levels: Sequence[Level]

    def _conds(self, alias: str, levels: Sequence[Level]) -> list[str]:
        t = f"{alias}." if alias else ""
        head = [] if self.kind is None else [f"{t}kind = '{self.kind}'"]
        return head + [f"{lv.col(alias)} IN (${lv.name})" for lv in levels]

    def where(self, alias: str = "d") -> str:
        """Rows of ``devices`` or ``detections`` (by ``alias``) the selection keeps."""
        return " AND ".join(self._conds(alias, self.levels))

    def variables(self) -> list[dash_b.QueryVariable]:
        """One multi-value query variable per level, "All" selected."""
        out = []
        for i, lv in enumerate(self.levels):
            conds = self._conds("", self.levels[:i])
            where = f" WHERE {' AND '.join(conds)}" if conds else ""
            out.append(
                dash_b.QueryVariable(lv.name)
                .label(lv.label)
                .datasource(_PG)
                .query(f"SELECT DISTINCT {lv.col('')} FROM devices{where}")
                .refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD)
                .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
                .multi(True)
                .include_all(True)
                .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
            )
        return out


def device_levels(network: str, site: str, device: str) -> list[Level]:
    """network -> site -> device, labelled for a dashboard."""
    return [
        Level("network", network, "{t}network"),
        Level("site", site, "{t}site"),
        Level("device", device, "{t}device_id"),
    ]


def _thresholds(steps: Iterable[Line]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=v, color=c) for v, c in steps])
    )


class Board:
    """One dashboard under construction: panels are added in order and numbered.

    Args:
        uid: the dashboard's stable uid (its file name on export).
        title: the title.
        description: what it shows.
        tags: tags besides ``ghgwatch``.
        devices: the device selection whose variables it offers.
    """

    def __init__(
        self, uid: str, title: str, description: str, tags: list[str], devices: DeviceFilter
    ) -> None:
        self.devices = devices
        self._next_id = 1
        self.dashboard = (
            dash_b.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["ghgwatch", *tags])
            .time("now-6h", "now")
            .refresh("30s")
            .timezone("browser")
            .editable()
        )
        for v in devices.variables():
            self.dashboard = self.dashboard.with_variable(v)

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _pg(self, panel: _Panel, title: str, description: str, sql: str, fmt: Format) -> _Panel:
        """Number a PostgreSQL panel, name it and give it its query."""
        return (
            panel.id(self._take_id())
            .title(title)
            .description(description)
            .datasource(_PG)
            .with_target(_Sql(sql, fmt))
        )

    def row(self, title: str) -> None:
        """Start a row of panels."""
        self.dashboard = self.dashboard.with_row(dash_b.Row(title).id(self._take_id()))

    def graph(
        self,
        title: str,
        description: str,
        sql: str,
        *,
        unit: str,
        width: int = W_HALF,
        lines: Iterable[Line] = (),
        time_from: str | None = None,
    ) -> None:
        """Add a time-series panel of one SQL query.

        Args:
            title: the panel title.
            description: what it shows (the panel's info tooltip).
            sql: a time-series query (``time``, ``metric``, value columns).
            unit: Grafana's unit of the values.
            width: grid columns.
            lines: dashed threshold lines as (value, colour); the first value is ``None``.
            time_from: a relative range of its own (``15m``) instead of the dashboard's.
        """
        panel = (
            self._pg(ts_b.Panel(), title, description, sql, "time_series")
            .unit(unit)
            .span(width)
            .height(_H_GRAPH)
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
            panel = panel.thresholds(_thresholds(steps)).thresholds_style(
                common_b.GraphThresholdsStyleConfig().mode(common_m.GraphTresholdsStyleMode.DASHED)
            )
        if time_from is not None:
            panel = panel.time_from(time_from)
        self.dashboard = self.dashboard.with_panel(panel)

    def table(self, title: str, description: str, sql: str, *, width: int = W_FULL) -> None:
        """Add a table panel of one SQL query."""
        panel = self._pg(table_b.Panel(), title, description, sql, "table")
        self.dashboard = self.dashboard.with_panel(panel.span(width).height(_H_TABLE))

    def stat(
        self, title: str, description: str, sql: str, *, unit: str, width: int = W_THIRD
    ) -> None:
        """Add a stat panel: one big number per row of the query, named by its text column."""
        panel = (
            self._pg(stat_b.Panel(), title, description, sql, "table")
            .unit(unit)
            .span(width)
            .height(_H_STAT)
            .reduce_options(common_b.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
            .text_mode(common_m.BigValueTextMode.VALUE_AND_NAME)
        )
        self.dashboard = self.dashboard.with_panel(panel)

    def prom_graph(
        self, title: str, description: str, exprs: list[tuple[str, str]], *, unit: str
    ) -> None:
        """Add a time-series panel of Prometheus queries, given as (expression, legend)."""
        panel = (
            ts_b.Panel()
            .id(self._take_id())
            .title(title)
            .description(description)
            .datasource(_PROM)
            .unit(unit)
            .span(W_HALF)
            .height(_H_GRAPH)
        )
        for i, (expr, legend) in enumerate(exprs):
            panel = panel.with_target(
                prom_b.Dataquery()
                .datasource(_PROM)
                .ref_id(chr(ord("A") + i))
                .expr(expr)
                .legend_format(legend)
            )
        self.dashboard = self.dashboard.with_panel(panel)

    def geomap(
        self, title: str, description: str, sql: str, *, center: tuple[float, float], zoom: float
    ) -> None:
        """Add a map with one marker per row at its ``latitude``/``longitude`` columns.

        Args:
            title: the panel title.
            description: what it shows.
            sql: a table query with ``latitude``, ``longitude`` and the columns the tooltip
                shows; a ``reporting`` column colours the markers (0 red, more green).
            center: (latitude, longitude) of the initial view.
            zoom: the initial zoom level.
        """
        markers = (
            common_b.MapLayerOptions()
            .type("markers")
            .name("Sites")
            .tooltip(True)
            .location(
                common_b.FrameGeometrySource()
                .mode(common_m.FrameGeometrySourceMode.COORDS)
                .latitude("latitude")
                .longitude("longitude")
            )
            .config(
                {
                    "showLegend": True,
                    "style": {
                        "color": {"field": "reporting", "fixed": "green"},
                        "size": {"fixed": 8, "min": 4, "max": 16},
                        "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    },
                }
            )
        )
        panel = (
            self._pg(geomap_b.Panel(), title, description, sql, "table")
            .span(W_FULL)
            .height(14)
            # The SDK types lat, lon and zoom as int; Grafana stores them as numbers.
            .view(
                geomap_b.MapViewConfig()
                .id("coords")
                .lat(cast(int, center[0]))
                .lon(cast(int, center[1]))
                .zoom(cast(int, zoom))
            )
            .basemap(common_b.MapLayerOptions().type("default").name("Basemap"))
            .layers([markers])
            .thresholds(_thresholds([(None, "red"), (1, "green")]))
        )
        self.dashboard = self.dashboard.with_panel(panel)

    def alert_annotations(self, *extra_tags: str) -> None:
        """Show ghgwatch alerts (Grafana annotations the alert service writes) on every panel.

        A tag query of Grafana's own annotation store: it matches the annotations that carry
        all of :data:`ALERT_TAGS` and ``extra_tags``, whatever dashboard they were written to.
        """
        target = dash_m.AnnotationTarget(
            limit=500, match_any=False, tags=[*ALERT_TAGS, *extra_tags], type_val="tags"
        )
        annotation = (
            dash_b.AnnotationQuery()
            .name("ghgwatch alerts")
            .datasource(_GRAFANA)
            .enable(True)
            .icon_color("orange")
            .type("tags")
            .target(_Fixed(target))
        )
        self.dashboard = self.dashboard.annotation(annotation)

    def detections(self) -> None:
        """Overlay the selected devices' detections on every graph and list them in a table."""
        where = self.devices.where("x")
        annotation = (
            dash_b.AnnotationQuery()
            .name("Detections")
            .datasource(_PG)
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
        self.dashboard = self.dashboard.annotation(annotation)
        self.table(
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
