"""Grafana dashboards as code: the monitoring centre's dashboards, built with the Grafana SDK.

``ghgwatch grafana export`` writes :func:`build_dashboards` to ``deploy/grafana/dashboards``,
which Grafana provisions (``deploy/grafana/provisioning``). Every SQL query reads the tables
and aggregates of ``processors.storage`` (``devices``, ``readings``, ``readings_1m``,
``dead_letters``) and uses only Grafana's PostgreSQL macros (``$__timeFilter``,
``$__timeGroupAlias``, ``$__timeFrom()``, ``$__timeTo()``, ``$__interval``,
``$__interval_ms``) and the dashboard's variables, so it runs on TimescaleDB and on plain
PostgreSQL alike. ``tests/deploy/test_grafana_queries.py`` runs every query against a
migrated database.
"""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog import builder as cog_builder
from grafana_foundation_sdk.cog import variants as cog_variants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

from core.settings import DetectionSettings

__all__ = [
    "DASHBOARD_UIDS",
    "PG_DATASOURCE_UID",
    "PROMETHEUS_DATASOURCE_UID",
    "SqlTarget",
    "build_dashboards",
    "dashboard_json",
    "export_dashboards",
]

PG_DATASOURCE_UID = "ghgwatch-pg"
PROMETHEUS_DATASOURCE_UID = "ghgwatch-prom"
PG = dash_m.DataSourceRef(type_val="grafana-postgresql-datasource", uid=PG_DATASOURCE_UID)
PROM = dash_m.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_DATASOURCE_UID)
DASHBOARD_UIDS = (
    "ghgwatch-city",
    "ghgwatch-cems",
    "ghgwatch-mine",
    "ghgwatch-completeness",
    "ghgwatch-pipeline",
)
# A device silent for longer than this is listed as silent (matches detection's gap default).
SILENT_AFTER = "5 minutes"
# HJ 76: an hour is valid with at least 45 valid minutes.
VALID_HOUR_MINUTES = 45
_W_FULL, _W_HALF, _W_THIRD = 24, 12, 8
_H_GRAPH, _H_TABLE, _H_STAT = 9, 9, 5

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


class _Sql(cog_builder.Builder[cog_variants.Dataquery]):
    def __init__(self, raw_sql: str, fmt: Format = "time_series", ref_id: str = "A") -> None:
        self._target = SqlTarget(ref_id, _dedent(raw_sql), fmt)

    def build(self) -> cog_variants.Dataquery:
        return self._target


def _dedent(sql: str) -> str:
    """Drop blank edge lines and common indentation, so stored SQL reads well in Grafana."""
    lines = [line.rstrip() for line in sql.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    indent = min((len(x) - len(x.lstrip()) for x in lines if x), default=0)
    return "\n".join(x[indent:] for x in lines)


# --- variables ------------------------------------------------------------------------------


def _var(name: str, label: str, sql: str, *, include_all: bool = True) -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .datasource(PG)
        .query(_dedent(sql))
        .refresh(dash_m.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(include_all)
        .current(dash_m.VariableOption(selected=True, text="All", value="$__all"))
    )


def _device_vars(kind_sql: str, network: str, site: str, device: str) -> list[dash_b.QueryVariable]:
    """network -> site -> device, each filtered by the ones before it."""
    return [
        _var("network", network, f"SELECT DISTINCT network FROM devices WHERE {kind_sql}"),
        _var(
            "site",
            site,
            f"SELECT DISTINCT site FROM devices WHERE {kind_sql} AND network IN ($network)",
        ),
        _var(
            "device",
            device,
            f"""
            SELECT DISTINCT device_id FROM devices
            WHERE {kind_sql} AND network IN ($network) AND site IN ($site)
            """,
        ),
    ]


def _devices_where(kind_sql: str) -> str:
    return (
        f"{kind_sql} AND d.network IN ($network) AND d.site IN ($site) AND d.device_id IN ($device)"
    )


# --- panels ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Ids:
    next_id: int = 1

    def take(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _thresholds(steps: Iterable[tuple[float | None, str]]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=v, color=c) for v, c in steps])
    )


def _graph(
    ids: _Ids,
    title: str,
    description: str,
    sql: str,
    *,
    unit: str,
    width: int = _W_HALF,
    lines: Iterable[tuple[float | None, str]] = (),
    time_from: str | None = None,
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PG)
        .with_target(_Sql(sql))
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
    return panel


def _table(
    ids: _Ids, title: str, description: str, sql: str, *, width: int = _W_FULL
) -> table_b.Panel:
    return (
        table_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PG)
        .with_target(_Sql(sql, "table"))
        .span(width)
        .height(_H_TABLE)
    )


def _stat(
    ids: _Ids, title: str, description: str, sql: str, *, unit: str, width: int = _W_THIRD
) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PG)
        .with_target(_Sql(sql, "table"))
        .unit(unit)
        .span(width)
        .height(_H_STAT)
        # One stat per row (per city, ...), named by the row's text column.
        .reduce_options(common_b.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .text_mode(common_m.BigValueTextMode.VALUE_AND_NAME)
    )


def _prom_graph(
    ids: _Ids, title: str, description: str, exprs: list[tuple[str, str]], *, unit: str
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .id(ids.take())
        .title(title)
        .description(description)
        .datasource(PROM)
        .unit(unit)
        .span(_W_HALF)
        .height(_H_GRAPH)
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


def _dashboard(uid: str, title: str, description: str, tags: list[str]) -> dash_b.Dashboard:
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

_WEIGHTED_AVG = "sum(r.avg * r.count) / nullif(sum(r.count), 0)"


def _detections_where(kind: str, *, with_location: bool = False) -> str:
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
        self._target = _SqlAnnotationTarget(_dedent(raw_sql))

    def build(self) -> dash_m.AnnotationTarget:
        return self._target


def _with_detections(d: dash_b.Dashboard, ids: _Ids, where: str) -> dash_b.Dashboard:
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
        _table(
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


def _city() -> dash_b.Dashboard:
    kind = "kind = 'city'"
    where = _devices_where("d.kind = 'city'")
    ids = _Ids()
    d = _dashboard(
        "ghgwatch-city",
        "City GHG concentrations (Baotou, Ordos)",
        "CO2 and CH4 dry mole fractions at the city monitoring stations: 1-minute means of"
        " readings flagged N (HJ 212 normal); calibration and fault periods are left out.",
        ["city"],
    )
    for v in _device_vars(kind, "City network", "Station", "Analyser"):
        d = d.with_variable(v)
    d = d.with_row(dash_b.Row("Now").id(ids.take()))
    d = d.with_panel(
        _stat(
            ids,
            "CO2 per city, last 15 minutes",
            "Mean CO2 over the last 15 minutes of the range, per city network.",
            f"""
            SELECT d.network AS city, {_WEIGHTED_AVG} AS co2_ppm
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE r.bucket > $__timeTo()::timestamptz - interval '15 minutes'
              AND r.bucket <= $__timeTo() AND r.metric = 'co2_ppm' AND {where}
            GROUP BY 1 ORDER BY 1
            """,
            unit="ppm",
            width=_W_HALF,
        )
    )
    d = d.with_panel(
        _stat(
            ids,
            "CH4 per city, last 15 minutes",
            "Mean CH4 over the last 15 minutes of the range, per city network (ppb inputs"
            " converted to ppm).",
            f"""
            SELECT d.network AS city,
                   sum(CASE r.metric WHEN 'ch4_ppb' THEN r.avg / 1000 ELSE r.avg END * r.count)
                     / nullif(sum(r.count), 0) AS ch4_ppm
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE r.bucket > $__timeTo()::timestamptz - interval '15 minutes'
              AND r.bucket <= $__timeTo() AND r.metric IN ('ch4_ppm', 'ch4_ppb') AND {where}
            GROUP BY 1 ORDER BY 1
            """,
            unit="ppm",
            width=_W_HALF,
        )
    )
    d = d.with_row(dash_b.Row("Concentrations").id(ids.take()))
    d = d.with_panel(
        _graph(
            ids,
            "CO2 per station",
            "Mean CO2 dry mole fraction per station (1-minute aggregates).",
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   d.network || '/' || d.site AS metric, {_WEIGHTED_AVG} AS co2_ppm
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND r.metric = 'co2_ppm' AND r.count > 0 AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="ppm",
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "CH4 per station",
            "Mean CH4 dry mole fraction per station, in ppm (ppb inputs divided by 1000).",
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   d.network || '/' || d.site AS metric,
                   sum(CASE r.metric WHEN 'ch4_ppb' THEN r.avg / 1000 ELSE r.avg END * r.count)
                     / nullif(sum(r.count), 0) AS ch4_ppm
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND r.metric IN ('ch4_ppm', 'ch4_ppb')
              AND r.count > 0 AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="ppm",
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "CO2 urban enhancement above background",
            "Station CO2 minus its city's background, taken as the 5th percentile of all the"
            " city's 1-minute station means in the selected range.",
            f"""
            WITH m AS (
              SELECT r.bucket, d.network, d.site, {_WEIGHTED_AVG} AS co2
              FROM readings_1m r JOIN devices d USING (device_id)
              WHERE $__timeFilter(r.bucket) AND r.metric = 'co2_ppm' AND r.count > 0
                AND {where}
              GROUP BY 1, 2, 3
            ), bg AS (
              SELECT network, percentile_cont(0.05) WITHIN GROUP (ORDER BY co2) AS background
              FROM m GROUP BY network
            )
            SELECT $__timeGroupAlias(m.bucket, $__interval), m.network || '/' || m.site AS metric,
                   avg(m.co2 - bg.background) AS enhancement_ppm
            FROM m JOIN bg USING (network)
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="ppm",
            width=_W_FULL,
        )
    )
    d = d.with_panel(
        _table(
            ids,
            "Stations",
            "Every analyser of the selected networks with its newest data.",
            f"""
            SELECT d.device_id AS analyser, d.network AS city, d.site AS station,
                   d.last_seen, d.last_reading_ts, d.readings_count
            FROM devices d
            WHERE {where}
            ORDER BY d.network, d.site, d.device_id
            """,
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "Hourly urban enhancement per city (detection service)",
            "CO2 and CH4 enhancement above the background the detection service tracks per"
            " station, averaged per city and hour (view city_enhancement_1h).",
            """
            SELECT $__timeGroupAlias(e.bucket, 1h), e.city || ' ' || e.series AS metric,
                   avg(e.avg) AS enhancement
            FROM city_enhancement_1h e
            WHERE $__timeFilter(e.bucket) AND e.city IN ($network)
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="none",
            width=_W_FULL,
        )
    )
    return _with_detections(d, ids, _detections_where("city"))


_CEMS_METRICS = (
    "co2_pct_vol",
    "flow_m3_h",
    "flue_temp_c",
    "static_pressure_pa",
    "baro_pressure_pa",
    "moisture_pct_vol",
    "load_mw",
)
# HJ 75/76: dry flue-gas flow at 273.15 K, 101325 Pa; CO2 1 % vol = 10,000 ppm = 19,650 mg/m³.
_CO2_T_H = (
    "co2_pct * 10000 * 1.965 * flow * 273.15 / (273.15 + temp_c)"
    " * (coalesce(baro_pa, 101325) + coalesce(static_pa, 0)) / 101325"
    " * (1 - coalesce(moisture_pct, 0) / 100) * 1e-9"
)


def _cems_pivot(where: str) -> str:
    cols = ",\n".join(
        f"  max(r.avg) FILTER (WHERE r.metric = '{m}') AS {alias}"
        for m, alias in zip(
            _CEMS_METRICS,
            ("co2_pct", "flow", "temp_c", "static_pa", "baro_pa", "moisture_pct", "load_mw"),
            strict=True,
        )
    )
    metric_list = ", ".join(f"'{m}'" for m in _CEMS_METRICS)
    return (
        "SELECT r.bucket, d.site || '/' || d.device AS unit,\n"
        f"{cols}\n"
        "FROM readings_1m r JOIN devices d USING (device_id)\n"
        f"WHERE $__timeFilter(r.bucket) AND r.metric IN ({metric_list}) AND r.count > 0\n"
        f"  AND {where}\n"
        "GROUP BY 1, 2"
    )


def _with_pivot(where: str, rest: str) -> str:
    """``WITH p AS (<one row per unit and minute>)`` followed by ``rest``."""
    pivot = "\n".join("  " + line for line in _cems_pivot(where).splitlines())
    return (
        f"WITH p AS (\n{pivot}\n)" + ("" if rest.lstrip().startswith(",") else "\n") + _dedent(rest)
    )


def _cems() -> dash_b.Dashboard:
    kind = "kind = 'cems'"
    where = _devices_where("d.kind = 'cems'")
    ids = _Ids()
    d = _dashboard(
        "ghgwatch-cems",
        "Power-plant CEMS: load, CO2 and emission rate",
        "Coal-fired units reporting over their CEMS: unit load, flue-gas CO2 and flow, and"
        " the CO2 mass emission rate on a dry, standard basis (HJ 75 / HJ 76).",
        ["cems"],
    )
    for v in _device_vars(kind, "Enterprise", "Plant", "Unit"):
        d = d.with_variable(v)

    def per_unit(title: str, desc: str, metric: str, unit: str) -> ts_b.Panel:
        return _graph(
            ids,
            title,
            desc,
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   d.site || '/' || d.device AS metric, {_WEIGHTED_AVG} AS value
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND r.metric = '{metric}' AND r.count > 0 AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit=unit,
        )

    d = d.with_row(dash_b.Row("Per unit").id(ids.take()))
    d = d.with_panel(per_unit("Unit load", "Electrical load per unit.", "load_mw", "MW"))
    d = d.with_panel(
        per_unit("Flue-gas CO2", "CO2 concentration in the flue gas.", "co2_pct_vol", "percent")
    )
    d = d.with_panel(
        per_unit("Flue-gas flow", "Flue-gas flow at actual (wet) conditions.", "flow_m3_h", "m³/h")
    )
    d = d.with_panel(
        _graph(
            ids,
            "CO2 mass emission rate",
            "G = C × Q_sn: CO2 (1 % vol = 19,650 mg/m³) times dry standard flow"
            " Q_sn = Q × 273.15/(273.15 + t) × (B_a + P_s)/101325 × (1 − X_sw), from 1-minute"
            " means; assumes CO2 is measured dry. Missing pressure: 101325 Pa; missing"
            " moisture: 0.",
            _with_pivot(
                where,
                f"""
            SELECT $__timeGroupAlias(bucket, $__interval), unit AS metric,
                   avg({_CO2_T_H}) AS co2_t_h
            FROM p
            WHERE co2_pct IS NOT NULL AND flow IS NOT NULL AND temp_c IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            ),
            unit="t/h",
        )
    )
    d = d.with_panel(
        _table(
            ids,
            "Units over the selected range",
            "Mean load and CO2 emission rate per unit, the emission intensity"
            " (g CO2/kWh = t/h × 1000 / MW) and the minutes with a valid emission rate.",
            _with_pivot(
                where,
                f"""
            , e AS (
              SELECT unit, load_mw,
                     CASE WHEN co2_pct IS NOT NULL AND flow IS NOT NULL AND temp_c IS NOT NULL
                          THEN {_CO2_T_H} END AS co2_t_h
              FROM p
            )
            SELECT unit, avg(load_mw) AS load_mw, avg(co2_t_h) AS co2_t_h,
                   avg(co2_t_h) * 1000 / nullif(avg(load_mw), 0) AS intensity_g_kwh,
                   count(co2_t_h) AS valid_minutes
            FROM e GROUP BY unit ORDER BY unit
            """,
            ),
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "Hourly CO2 emissions of valid hours (detection service)",
            "Hourly CO2 mass emission rate per unit as the detection service computes it"
            f" (HJ 75/76), only for hours with at least {VALID_HOUR_MINUTES} valid minutes.",
            f"""
            SELECT $__timeGroupAlias(x.ts, 1h), d.site || '/' || d.device AS metric,
                   avg(x.value) AS co2_t_h
            FROM derived x JOIN devices d USING (device_id)
            WHERE $__timeFilter(x.ts) AND x.series = 'co2_mass_t_h_1h' AND x.valid
              AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="t/h",
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "Hourly emission intensity (detection service)",
            "g CO2 per kWh generated, per unit and valid hour; compare with the unit class's"
            " benchmark (MISSION.md, plan box 3).",
            f"""
            SELECT $__timeGroupAlias(x.ts, 1h), d.site || '/' || d.device AS metric,
                   avg(x.value) AS intensity_g_kwh
            FROM derived x JOIN devices d USING (device_id)
            WHERE $__timeFilter(x.ts) AND x.series = 'intensity_g_kwh_1h' AND x.valid
              AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="none",
        )
    )
    return _with_detections(d, ids, _detections_where("cems"))


def _levels_values(detection: DetectionSettings) -> str:
    rows = []
    for location, lv in sorted(detection.mine_levels.items()):
        alarm = "NULL" if lv.alarm_pct_vol is None else repr(float(lv.alarm_pct_vol))
        cut = "NULL" if lv.cut_pct_vol is None else repr(float(lv.cut_pct_vol))
        rows.append(f"('{location}', {alarm}::float8, {cut}::float8)")
    return "VALUES " + ", ".join(rows)


def _mine(detection: DetectionSettings) -> dash_b.Dashboard:
    kind = "kind = 'mine'"
    where = _devices_where("d.kind = 'mine'") + " AND coalesce(d.location, 'other') IN ($location)"
    ids = _Ids()
    d = _dashboard(
        "ghgwatch-mine",
        "Coal-mine methane",
        "CH4 (% vol) at coal-mine sensors by location class, against the alarm and power-cut"
        " levels of the Coal Mine Safety Regulations 2022 (ghgwatch detection settings).",
        ["mine"],
    )
    variables = [
        _var("network", "Mining group", f"SELECT DISTINCT network FROM devices WHERE {kind}"),
        _var(
            "site",
            "Mine",
            f"SELECT DISTINCT site FROM devices WHERE {kind} AND network IN ($network)",
        ),
        _var(
            "location",
            "Location class",
            f"""
            SELECT DISTINCT coalesce(location, 'other') FROM devices
            WHERE {kind} AND network IN ($network) AND site IN ($site)
            """,
        ),
        _var(
            "device",
            "Sensor",
            f"""
            SELECT DISTINCT device_id FROM devices
            WHERE {kind} AND network IN ($network) AND site IN ($site)
              AND coalesce(location, 'other') IN ($location)
            """,
        ),
    ]
    for v in variables:
        d = d.with_variable(v)
    levels = sorted(
        {lv.alarm_pct_vol for lv in detection.mine_levels.values() if lv.alarm_pct_vol}
        | {lv.cut_pct_vol for lv in detection.mine_levels.values() if lv.cut_pct_vol}
    )
    palette = ["yellow", "orange", "red", "dark-red", "purple"]
    lines: list[tuple[float | None, str]] = [(None, "green")]
    lines += [(lvl, palette[min(i, len(palette) - 1)]) for i, lvl in enumerate(levels)]
    d = d.with_row(dash_b.Row("Levels").id(ids.take()))
    d = d.with_panel(
        _graph(
            ids,
            "Highest CH4 by location class",
            "The highest 1-minute maximum of any sensor in each location class. Dashed lines:"
            " the alarm and power-cut levels in use (they differ per class; see the table).",
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   coalesce(d.location, 'other') AS metric, max(r.max) AS ch4_pct_vol
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND r.metric = 'ch4_pct_vol' AND r.count > 0
              AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="percent",
            lines=lines,
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "CH4 per sensor",
            "1-minute maximum CH4 per sensor.",
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   d.device_id || ' (' || coalesce(d.location, 'other') || ')' AS metric,
                   max(r.max) AS ch4_pct_vol
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND r.metric = 'ch4_pct_vol' AND r.count > 0
              AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="percent",
            lines=lines,
        )
    )
    d = d.with_panel(
        _table(
            ids,
            "Sensors at or above their alarm level",
            "Sensors whose 1-minute maximum reached the alarm level of their location class in"
            " the selected range, with the power-cut level and the last minute above alarm.",
            f"""
            WITH lvl(location, alarm_pct_vol, cut_pct_vol) AS ({_levels_values(detection)})
            SELECT d.device_id AS sensor, coalesce(d.location, 'other') AS location,
                   max(r.max) AS max_ch4_pct_vol, lvl.alarm_pct_vol, lvl.cut_pct_vol,
                   max(r.bucket) FILTER (WHERE r.max >= lvl.alarm_pct_vol) AS last_above_alarm,
                   count(*) FILTER (WHERE r.max >= lvl.alarm_pct_vol) AS minutes_above_alarm
            FROM readings_1m r JOIN devices d USING (device_id)
            JOIN lvl ON lvl.location = coalesce(d.location, 'other')
            WHERE $__timeFilter(r.bucket) AND r.metric = 'ch4_pct_vol' AND r.count > 0
              AND {where}
            GROUP BY 1, 2, 4, 5
            HAVING max(r.max) >= min(lvl.alarm_pct_vol)
            ORDER BY 3 DESC, 1
            """,
        )
    )
    d = d.with_panel(
        _stat(
            ids,
            "Sensors reporting",
            f"Sensors with a reading in the last {SILENT_AFTER} of the range, of all sensors"
            " selected.",
            f"""
            SELECT count(*) FILTER (
                     WHERE d.last_seen > $__timeTo()::timestamptz - interval '{SILENT_AFTER}'
                   ) AS reporting,
                   count(*) AS sensors
            FROM devices d WHERE {where}
            """,
            unit="none",
            width=_W_FULL,
        )
    )
    return _with_detections(d, ids, _detections_where("mine", with_location=True))


def _completeness() -> dash_b.Dashboard:
    ids = _Ids()
    where = (
        "d.kind IN ($kind) AND d.network IN ($network) AND d.site IN ($site)"
        " AND d.device_id IN ($device)"
    )
    d = _dashboard(
        "ghgwatch-completeness",
        "Data completeness",
        "Readings per device per hour against what the device normally sends, and valid"
        f" minutes per hour against the HJ 76 rule (a valid hour has ≥ {VALID_HOUR_MINUTES}"
        " valid minutes).",
        ["quality"],
    )
    variables = [
        _var("kind", "Source kind", "SELECT DISTINCT kind FROM devices"),
        _var("network", "Network", "SELECT DISTINCT network FROM devices WHERE kind IN ($kind)"),
        _var(
            "site",
            "Site",
            "SELECT DISTINCT site FROM devices WHERE kind IN ($kind) AND network IN ($network)",
        ),
        _var(
            "device",
            "Device",
            """
            SELECT DISTINCT device_id FROM devices
            WHERE kind IN ($kind) AND network IN ($network) AND site IN ($site)
            """,
        ),
    ]
    for v in variables:
        d = d.with_variable(v)
    d = d.with_panel(
        _graph(
            ids,
            "Valid minutes per hour",
            "Minutes per hour with at least one reading flagged N, per device. Below the dashed"
            f" line ({VALID_HOUR_MINUTES}) the hour is not valid under HJ 76.",
            f"""
            SELECT $__timeGroupAlias(r.bucket, 1h), r.device_id AS metric,
                   count(DISTINCT r.bucket) FILTER (WHERE r.count > 0) AS valid_minutes
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="none",
            width=_W_FULL,
            lines=[(None, "red"), (float(VALID_HOUR_MINUTES), "green")],
        )
    )
    d = d.with_panel(
        _table(
            ids,
            "Readings per device per hour vs expected",
            "expected = 60 × the device's median readings per minute over the range (all"
            " metrics, all flags); completeness = readings / expected.",
            f"""
            WITH m AS (
              SELECT r.bucket, r.device_id, sum(r.n_all) AS n, sum(r.count) AS n_valid
              FROM readings_1m r JOIN devices d USING (device_id)
              WHERE $__timeFilter(r.bucket) AND {where}
              GROUP BY 1, 2
            ), rate AS (
              SELECT device_id, percentile_disc(0.5) WITHIN GROUP (ORDER BY n) AS per_minute
              FROM m GROUP BY device_id
            )
            SELECT date_trunc('hour', m.bucket) AS hour, m.device_id AS device,
                   sum(m.n) AS readings, 60 * rate.per_minute AS expected,
                   round(100.0 * sum(m.n) / nullif(60 * rate.per_minute, 0), 1)
                     AS completeness_pct,
                   count(*) FILTER (WHERE m.n_valid > 0) AS valid_minutes,
                   count(*) FILTER (WHERE m.n_valid > 0) >= {VALID_HOUR_MINUTES} AS valid_hour
            FROM m JOIN rate USING (device_id)
            GROUP BY 1, 2, rate.per_minute
            ORDER BY 1 DESC, 2
            """,
        )
    )
    d = d.with_panel(
        _table(
            ids,
            "Silent devices",
            f"Devices with no reading in the last {SILENT_AFTER} of the range.",
            f"""
            SELECT d.device_id AS device, d.kind, d.last_seen,
                   $__timeTo()::timestamptz - d.last_seen AS silent_for
            FROM devices d
            WHERE d.last_seen < $__timeTo()::timestamptz - interval '{SILENT_AFTER}' AND {where}
            ORDER BY d.last_seen
            """,
        )
    )
    return d


def _pipeline() -> dash_b.Dashboard:
    ids = _Ids()
    d = _dashboard(
        "ghgwatch-pipeline",
        "Pipeline health",
        "Rejected messages by reason, ingest rates, storage delay, and the bridge's and the"
        " MQTT broker's own counters (Prometheus).",
        ["pipeline"],
    )
    d = d.with_variable(_var("kind", "Source kind", "SELECT DISTINCT kind FROM devices"))
    d = d.with_row(dash_b.Row("Database").id(ids.take()))
    d = d.with_panel(
        _graph(
            ids,
            "Rejected messages by reason",
            "Distinct rejected messages per reason, by when each was first received"
            " (repeats of the same bytes on the same topic count once).",
            """
            SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric,
                   count(*) AS rejected
            FROM dead_letters
            WHERE $__timeFilter(received_at)
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="none",
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "Ingest rate by source kind",
            "Readings stored per second, by device time, from the 1-minute aggregates.",
            """
            SELECT $__timeGroupAlias(r.bucket, $__interval), d.kind AS metric,
                   sum(r.n_all) / ($__interval_ms / 1000.0) AS readings_per_s
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND d.kind IN ($kind)
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="reqps",
        )
    )
    d = d.with_panel(
        _graph(
            ids,
            "Delay from device to database (p50, p95)",
            "stored_at − device time of raw readings (the last 15 minutes only: it reads the"
            " raw table).",
            """
            SELECT $__timeGroupAlias(r.ts, $__interval),
                   percentile_cont(0.5) WITHIN GROUP (
                     ORDER BY extract(epoch FROM r.stored_at - r.ts)) AS p50_s,
                   percentile_cont(0.95) WITHIN GROUP (
                     ORDER BY extract(epoch FROM r.stored_at - r.ts)) AS p95_s
            FROM readings r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.ts) AND d.kind IN ($kind)
            GROUP BY 1 ORDER BY 1
            """,
            unit="s",
            time_from="15m",
        )
    )
    d = d.with_panel(
        _table(
            ids,
            "Latest rejected messages",
            "The newest 100 rejected messages with the reason the device was told.",
            """
            SELECT last_received_at, device_id, mqtt_topic, reason, detail, occurrences
            FROM dead_letters
            WHERE $__timeFilter(last_received_at)
            ORDER BY last_received_at DESC
            LIMIT 100
            """,
            width=_W_HALF,
        )
    )
    d = d.with_row(dash_b.Row("Bridge and broker (Prometheus)").id(ids.take()))
    d = d.with_panel(
        _prom_graph(
            ids,
            "Bridge messages",
            "MQTT messages the bridges received, accepted and rejected, per second.",
            [
                ("sum(rate(ghgwatch_bridge_messages_received_total[5m]))", "received"),
                ("sum(rate(ghgwatch_bridge_messages_accepted_total[5m]))", "accepted"),
                (
                    "sum by (reason) (rate(ghgwatch_bridge_messages_rejected_total[5m]))",
                    "rejected {{reason}}",
                ),
            ],
            unit="reqps",
        )
    )
    d = d.with_panel(
        _prom_graph(
            ids,
            "Messages dropped",
            "Anything above zero is data lost: the broker's $SYS/broker/publish/messages/dropped"
            " (queue or in-flight limits, via mosquitto-exporter) and the bridges' own drops.",
            [
                ("sum(rate(broker_publish_messages_dropped[5m]))", "broker dropped"),
                (
                    "sum by (reason) (rate(ghgwatch_bridge_messages_dropped_total[5m]))",
                    "bridge dropped {{reason}}",
                ),
            ],
            unit="reqps",
        )
    )
    d = d.with_panel(
        _prom_graph(
            ids,
            "Ack latency and in-flight",
            "p99 from MQTT receive to acknowledgement (after Kafka confirmed), and messages"
            " received but not yet acknowledged.",
            [
                (
                    "histogram_quantile(0.99, sum by (le)"
                    " (rate(ghgwatch_bridge_ack_latency_seconds_bucket[5m])))",
                    "p99 ack latency (s)",
                ),
                ("sum(ghgwatch_bridge_in_flight_messages)", "in flight"),
            ],
            unit="short",
        )
    )
    return d


def build_dashboards(detection: DetectionSettings | None = None) -> dict[str, dict[str, object]]:
    """Build every dashboard as Grafana JSON.

    Args:
        detection: the detection settings whose mine CH4 levels the mine dashboard draws
            (default: the regulation defaults).

    Returns:
        Dashboard JSON objects keyed by dashboard uid.
    """
    det = detection if detection is not None else DetectionSettings()
    boards = [_city(), _cems(), _mine(det), _completeness(), _pipeline()]
    out: dict[str, dict[str, object]] = {}
    for board in boards:
        data = json.loads(json.dumps(board.build(), cls=JSONEncoder))
        out[str(data["uid"])] = data
    return out


def dashboard_json(dashboard: dict[str, object]) -> str:
    """The stable text form written to disk (sorted keys, two-space indent, final newline)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_dashboards(out_dir: Path, detection: DetectionSettings | None = None) -> list[Path]:
    """Write every dashboard to ``out_dir/<uid>.json``.

    Args:
        out_dir: the folder Grafana provisions dashboards from.
        detection: see :func:`build_dashboards`.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, board in build_dashboards(detection).items():
        path = out_dir / f"{uid}.json"
        path.write_text(dashboard_json(board), encoding="utf-8")
        written.append(path)
    return written
