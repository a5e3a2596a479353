"""The city dashboard: CO2 and CH4 at the Baotou and Ordos monitoring stations."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    W_FULL,
    W_HALF,
    WEIGHTED_AVG,
    PanelIds,
    dashboard,
    detections_where,
    device_variables,
    devices_where,
    graph,
    stat,
    table,
    with_detections,
)

__all__ = ["city_dashboard"]


def city_dashboard() -> dash_b.Dashboard:
    kind = "kind = 'city'"
    where = devices_where("d.kind = 'city'")
    ids = PanelIds()
    d = dashboard(
        "ghgwatch-city",
        "City GHG concentrations (Baotou, Ordos)",
        "CO2 and CH4 dry mole fractions at the city monitoring stations: 1-minute means of"
        " readings flagged N (HJ 212 normal); calibration and fault periods are left out.",
        ["city"],
    )
    for v in device_variables(kind, "City network", "Station", "Analyser"):
        d = d.with_variable(v)
    d = d.with_row(dash_b.Row("Now").id(ids.take()))
    d = d.with_panel(
        stat(
            ids,
            "CO2 per city, last 15 minutes",
            "Mean CO2 over the last 15 minutes of the range, per city network.",
            f"""
            SELECT d.network AS city, {WEIGHTED_AVG} AS co2_ppm
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE r.bucket > $__timeTo()::timestamptz - interval '15 minutes'
              AND r.bucket <= $__timeTo() AND r.metric = 'co2_ppm' AND {where}
            GROUP BY 1 ORDER BY 1
            """,
            unit="ppm",
            width=W_HALF,
        )
    )
    d = d.with_panel(
        stat(
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
            width=W_HALF,
        )
    )
    d = d.with_row(dash_b.Row("Concentrations").id(ids.take()))
    d = d.with_panel(
        graph(
            ids,
            "CO2 per station",
            "Mean CO2 dry mole fraction per station (1-minute aggregates).",
            f"""
            SELECT $__timeGroupAlias(r.bucket, $__interval),
                   d.network || '/' || d.site AS metric, {WEIGHTED_AVG} AS co2_ppm
            FROM readings_1m r JOIN devices d USING (device_id)
            WHERE $__timeFilter(r.bucket) AND r.metric = 'co2_ppm' AND r.count > 0 AND {where}
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            unit="ppm",
        )
    )
    d = d.with_panel(
        graph(
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
        graph(
            ids,
            "CO2 urban enhancement above background",
            "Station CO2 minus its city's background, taken as the 5th percentile of all the"
            " city's 1-minute station means in the selected range.",
            f"""
            WITH m AS (
              SELECT r.bucket, d.network, d.site, {WEIGHTED_AVG} AS co2
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
            width=W_FULL,
        )
    )
    d = d.with_panel(
        table(
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
        graph(
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
            width=W_FULL,
        )
    )
    return with_detections(d, ids, detections_where("city"))
