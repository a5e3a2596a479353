"""The power-plant CEMS dashboard: load, flue-gas CO2 and flow, and the CO2 emission rate."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import timeseries as ts_b

from dashboards.panels import (
    VALID_HOUR_MINUTES,
    WEIGHTED_AVG,
    PanelIds,
    dashboard,
    detections_where,
    device_variables,
    devices_where,
    graph,
    table,
    with_detections,
)

__all__ = ["cems_dashboard"]


# The engine's derived series (processors.detection.cems writes them, the detection service
# stores them in `derived`): the emission rate is computed once, by the engine.
_MINUTE_RATE = "co2_mass_t_h"
_HOUR_RATE = "co2_mass_t_h_1h"
_HOUR_INTENSITY = "intensity_g_kwh_1h"


def cems_dashboard() -> dash_b.Dashboard:
    kind = "kind = 'cems'"
    where = devices_where("d.kind = 'cems'")
    ids = PanelIds()
    d = dashboard(
        "ghgwatch-cems",
        "Power-plant CEMS: load, CO2 and emission rate",
        "Coal-fired units reporting over their CEMS: unit load, flue-gas CO2 and flow, and"
        " the CO2 mass emission rate on a dry, standard basis (HJ 75 / HJ 76).",
        ["cems"],
    )
    for v in device_variables(kind, "Enterprise", "Plant", "Unit"):
        d = d.with_variable(v)

    def derived_graph(
        title: str, desc: str, series: str, interval: str, alias: str, unit: str
    ) -> ts_b.Panel:
        """A valid derived series of the detection service, per unit."""
        return graph(
            ids,
            title,
            desc,
            f"""
            SELECT $__timeGroupAlias(x.ts, {interval}), d.site || '/' || d.device AS metric,
                   avg(x.value) AS {alias}
            FROM derived x JOIN devices d USING (device_id)
            WHERE $__timeFilter(x.ts) AND x.series = '{series}' AND x.valid AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit=unit,
        )

    def per_unit(title: str, desc: str, metric: str, unit: str) -> ts_b.Panel:
        return graph(
            ids,
            title,
            desc,
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   d.site || '/' || d.device AS metric, {WEIGHTED_AVG} AS value
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
        derived_graph(
            "CO2 mass emission rate",
            "G = C × Q_sn per valid minute, as the detection service computes it (HJ 75/76):"
            " flue-gas CO2 (dry) times the dry standard flow"
            " Q_sn = Q × 273.15/(273.15 + t) × (B_a + P_s)/101325 × (1 − X_sw). A minute is"
            " valid with CO2, flow, flue temperature and moisture readings.",
            _MINUTE_RATE,
            "$__interval",
            "co2_t_h",
            "t/h",
        )
    )
    d = d.with_panel(
        table(
            ids,
            "Units over the selected range",
            "Mean load and CO2 emission rate (the detection service's valid minutes) per unit,"
            " the emission intensity (g CO2/kWh = t/h × 1000 / MW) and the minutes with a"
            " valid emission rate.",
            f"""
            WITH g AS (
              SELECT x.device_id, avg(x.value) AS co2_t_h, count(*) AS valid_minutes
              FROM derived x
              WHERE $__timeFilter(x.ts) AND x.series = '{_MINUTE_RATE}' AND x.valid
                AND x.device_id IN ($device)
              GROUP BY 1
            ), l AS (
              SELECT r.device_id, avg(r.avg) AS load_mw
              FROM readings_1m r
              WHERE $__timeFilter(r.bucket) AND r.metric = 'load_mw' AND r.count > 0
                AND r.device_id IN ($device)
              GROUP BY 1
            )
            SELECT d.site || '/' || d.device AS unit, l.load_mw, g.co2_t_h,
                   g.co2_t_h * 1000 / nullif(l.load_mw, 0) AS intensity_g_kwh,
                   coalesce(g.valid_minutes, 0) AS valid_minutes
            FROM devices d LEFT JOIN g USING (device_id) LEFT JOIN l USING (device_id)
            WHERE (g.device_id IS NOT NULL OR l.device_id IS NOT NULL) AND {where}
            ORDER BY 1
            """,
        )
    )
    d = d.with_panel(
        derived_graph(
            "Hourly CO2 emissions of valid hours (detection service)",
            "Hourly CO2 mass emission rate per unit as the detection service computes it"
            f" (HJ 75/76), only for hours with at least {VALID_HOUR_MINUTES} valid minutes.",
            _HOUR_RATE,
            "1h",
            "co2_t_h",
            "t/h",
        )
    )
    d = d.with_panel(
        derived_graph(
            "Hourly emission intensity (detection service)",
            "g CO2 per kWh generated, per unit and valid hour; compare with the benchmark of"
            " the unit's class (supply coal g/kWh × t CO2 per t standard coal, in the"
            " detection settings).",
            _HOUR_INTENSITY,
            "1h",
            "intensity_g_kwh",
            "none",
        )
    )
    return with_detections(d, ids, detections_where("cems"))
