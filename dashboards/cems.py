"""The power-plant CEMS dashboard: load, flue-gas CO2 and flow, and the CO2 emission rate."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from core.settings import DetectionSettings
from dashboards.panels import (
    READINGS_1M,
    VALID_HOUR_MINUTES,
    WEIGHTED_AVG,
    Board,
    DeviceFilter,
    Line,
    device_levels,
    series_sql,
)

__all__ = ["INTENSITY_UNIT", "cems_dashboard"]

# Grafana's custom-unit syntax: the number, then the unit.
INTENSITY_UNIT = "suffix: g CO2/kWh"

_DESCRIPTION = (
    "Coal-fired units reporting over their CEMS: unit load, flue-gas CO2 and flow, and"
    " the CO2 mass emission rate on a dry, standard basis (HJ 75 / HJ 76)."
)

# The engine's derived series (processors.detection.cems computes them, the detection service
# stores them in `derived`): the emission rate is computed once, by the engine.
_MINUTE_RATE = "co2_mass_t_h"
_HOUR_RATE = "co2_mass_t_h_1h"
_HOUR_INTENSITY = "intensity_g_kwh_1h"
_UNIT = "d.site || '/' || d.device"
_DERIVED = "derived x JOIN devices d USING (device_id)"


def _benchmark_lines(detection: DetectionSettings) -> list[Line]:
    """Dashed lines at the benchmark intensities (g CO2/kWh) of the units' classes."""
    table = detection.cems_benchmarks_g_sce_kwh
    used = {c for c in detection.cems_unit_class.values() if c in table}
    g_sce = sorted({table[c] for c in used}) or [min(table.values()), max(table.values())]
    # g standard coal per kWh x t CO2 per t standard coal = g CO2 per kWh.
    return [(None, "transparent"), *((g * detection.co2_t_per_t_sce, "orange") for g in g_sce)]


def cems_dashboard(detection: DetectionSettings | None = None) -> dash_b.Dashboard:
    """The CEMS dashboard: per-unit channels, the engine's emission rates, detections."""
    detection = detection if detection is not None else DetectionSettings()
    devices = DeviceFilter("cems", device_levels("Enterprise", "Plant", "Unit"))
    where = devices.where()
    b = Board(
        "ghgwatch-cems",
        "Power-plant CEMS: load, CO2 and emission rate",
        _DESCRIPTION,
        ["cems"],
        devices,
    )
    b.alert_annotations("kind:cems")

    def channel(metric: str) -> str:
        """A channel's 1-minute means per unit."""
        return series_sql(
            READINGS_1M,
            "r.bucket",
            _UNIT,
            f"{WEIGHTED_AVG} AS value",
            f"r.metric = '{metric}' AND r.count > 0 AND {where}",
        )

    def derived(series: str, alias: str, interval: str) -> str:
        """A derived series per unit, its valid points only."""
        return series_sql(
            _DERIVED,
            "x.ts",
            _UNIT,
            f"avg(x.value) AS {alias}",
            f"x.series = '{series}' AND x.valid AND {where}",
            interval=interval,
        )

    b.row("Per unit")
    b.graph("Unit load", "Electrical load per unit.", channel("load_mw"), unit="MW")
    b.graph(
        "Flue-gas CO2", "CO2 concentration in the flue gas.", channel("co2_pct_vol"), unit="percent"
    )
    b.graph(
        "Flue-gas flow",
        "Flue-gas flow at actual (wet) conditions.",
        channel("flow_m3_h"),
        unit="m³/h",
    )
    b.graph(
        "CO2 mass emission rate",
        "G = C × Q_sn per valid minute, as the detection service computes it (HJ 75/76):"
        " flue-gas CO2 (dry) times the dry standard flow"
        " Q_sn = Q × 273.15/(273.15 + t) × (B_a + P_s)/101325 × (1 − X_sw). A minute is"
        " valid with CO2, flow, flue temperature and moisture readings.",
        derived(_MINUTE_RATE, "co2_t_h", "$__interval"),
        unit="t/h",
    )
    b.table(
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
        SELECT {_UNIT} AS unit, l.load_mw, g.co2_t_h,
               g.co2_t_h * 1000 / nullif(l.load_mw, 0) AS intensity_g_kwh,
               coalesce(g.valid_minutes, 0) AS valid_minutes
        FROM devices d LEFT JOIN g USING (device_id) LEFT JOIN l USING (device_id)
        WHERE (g.device_id IS NOT NULL OR l.device_id IS NOT NULL) AND {where}
        ORDER BY 1
        """,
    )
    b.graph(
        "Hourly CO2 emissions of valid hours (detection service)",
        "Hourly CO2 mass emission rate per unit as the detection service computes it"
        f" (HJ 75/76), only for hours with at least {VALID_HOUR_MINUTES} valid minutes.",
        derived(_HOUR_RATE, "co2_t_h", "1h"),
        unit="t/h",
    )
    b.graph(
        "Hourly emission intensity (detection service)",
        "g CO2 per kWh generated, per unit and valid hour; compare with the benchmark of"
        " the unit's class (supply coal g/kWh × t CO2 per t standard coal, in the"
        " detection settings). Dashed: the benchmarks of the classes the units are mapped to"
        " (detection.cems_unit_class), or the lowest and highest class when none is mapped.",
        derived(_HOUR_INTENSITY, "intensity_g_kwh", "1h"),
        unit=INTENSITY_UNIT,
        lines=_benchmark_lines(detection),
    )
    b.detections()
    return b.dashboard
