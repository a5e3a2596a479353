"""The city dashboard: CO2 and CH4 at the Baotou and Ordos monitoring stations."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    READINGS_1M,
    W_FULL,
    W_HALF,
    WEIGHTED_AVG,
    Board,
    DeviceFilter,
    device_levels,
    series_sql,
)

__all__ = ["city_dashboard"]

_DESCRIPTION = (
    "CO2 and CH4 dry mole fractions at the city monitoring stations: 1-minute means of"
    " readings flagged N (HJ 212 normal); calibration and fault periods are left out."
)

# CH4 in ppm whichever unit the analyser sends (ppb inputs divided by 1000), count-weighted.
_CH4_PPM = (
    "sum(CASE r.metric WHEN 'ch4_ppb' THEN r.avg / 1000 ELSE r.avg END * r.count)"
    " / nullif(sum(r.count), 0)"
)
_CH4_METRICS = "r.metric IN ('ch4_ppm', 'ch4_ppb')"
_STATION = "d.network || '/' || d.site"


def _last_15_minutes(value: str, metric_cond: str, where: str) -> str:
    """Per city network, ``value`` over the last 15 minutes of the range."""
    return f"""
        SELECT d.network AS city, {value}
        FROM {READINGS_1M}
        WHERE r.bucket > $__timeTo()::timestamptz - interval '15 minutes'
          AND r.bucket <= $__timeTo() AND {metric_cond} AND {where}
        GROUP BY 1 ORDER BY 1
        """


def city_dashboard() -> dash_b.Dashboard:
    """The city dashboard: concentrations per city and station, enhancement, detections."""
    devices = DeviceFilter("city", device_levels("City network", "Station", "Analyser"))
    where = devices.where()
    b = Board(
        "ghgwatch-city", "City GHG concentrations (Baotou, Ordos)", _DESCRIPTION, ["city"], devices
    )
    b.alert_annotations("kind:city")
    b.row("Now")
    b.stat(
        "CO2 per city, last 15 minutes",
        "Mean CO2 over the last 15 minutes of the range, per city network.",
        _last_15_minutes(f"{WEIGHTED_AVG} AS co2_ppm", "r.metric = 'co2_ppm'", where),
        unit="ppm",
        width=W_HALF,
    )
    b.stat(
        "CH4 per city, last 15 minutes",
        "Mean CH4 over the last 15 minutes of the range, per city network (ppb inputs"
        " converted to ppm).",
        _last_15_minutes(f"{_CH4_PPM} AS ch4_ppm", _CH4_METRICS, where),
        unit="ppm",
        width=W_HALF,
    )
    b.row("Concentrations")
    b.graph(
        "CO2 per station",
        "Mean CO2 dry mole fraction per station (1-minute aggregates).",
        series_sql(
            READINGS_1M,
            "r.bucket",
            _STATION,
            f"{WEIGHTED_AVG} AS co2_ppm",
            f"r.metric = 'co2_ppm' AND r.count > 0 AND {where}",
        ),
        unit="ppm",
    )
    b.graph(
        "CH4 per station",
        "Mean CH4 dry mole fraction per station, in ppm (ppb inputs divided by 1000).",
        series_sql(
            READINGS_1M,
            "r.bucket",
            _STATION,
            f"{_CH4_PPM} AS ch4_ppm",
            f"{_CH4_METRICS} AND r.count > 0 AND {where}",
        ),
        unit="ppm",
    )
    b.graph(
        "CO2 urban enhancement above background",
        "Station CO2 minus its city's background, taken as the 5th percentile of all the"
        " city's 1-minute station means in the selected range.",
        f"""
        WITH m AS (
          SELECT r.bucket, d.network, d.site, {WEIGHTED_AVG} AS co2
          FROM {READINGS_1M}
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
        width=W_FULL,
    )
    b.table(
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
    b.graph(
        "Hourly urban enhancement per city (detection service)",
        "CO2 and CH4 enhancement above the background the detection service tracks per"
        " station, averaged per city and hour (view city_enhancement_1h).",
        series_sql(
            "city_enhancement_1h e",
            "e.bucket",
            "e.city || ' ' || e.series",
            "avg(e.avg) AS enhancement",
            "e.city IN ($network)",
            interval="1h",
        ),
        unit="none",
        width=W_FULL,
    )
    b.detections()
    return b.dashboard
