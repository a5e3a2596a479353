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
    dedent_sql,
    detections_where,
    device_variables,
    devices_where,
    graph,
    table,
    with_detections,
)

__all__ = ["cems_dashboard"]


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
        f"WITH p AS (\n{pivot}\n)"
        + ("" if rest.lstrip().startswith(",") else "\n")
        + dedent_sql(rest)
    )


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
        graph(
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
        table(
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
        graph(
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
        graph(
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
    return with_detections(d, ids, detections_where("cems"))
