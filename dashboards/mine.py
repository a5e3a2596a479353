"""The coal-mine methane dashboard: CH4 by location class against its alarm levels."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from core.settings import DetectionSettings
from dashboards.panels import (
    SILENT_AFTER,
    W_FULL,
    PanelIds,
    dashboard,
    detections_where,
    devices_where,
    graph,
    query_var,
    stat,
    table,
    with_detections,
)

__all__ = ["mine_dashboard"]


def _levels_values(detection: DetectionSettings) -> str:
    rows = []
    for location, lv in sorted(detection.mine_levels.items()):
        alarm = "NULL" if lv.alarm_pct_vol is None else repr(float(lv.alarm_pct_vol))
        cut = "NULL" if lv.cut_pct_vol is None else repr(float(lv.cut_pct_vol))
        rows.append(f"('{location}', {alarm}::float8, {cut}::float8)")
    return "VALUES " + ", ".join(rows)


def mine_dashboard(detection: DetectionSettings) -> dash_b.Dashboard:
    kind = "kind = 'mine'"
    where = devices_where("d.kind = 'mine'") + " AND coalesce(d.location, 'other') IN ($location)"
    ids = PanelIds()
    d = dashboard(
        "ghgwatch-mine",
        "Coal-mine methane",
        "CH4 (% vol) at coal-mine sensors by location class, against the alarm and power-cut"
        " levels of the Coal Mine Safety Regulations 2022 (ghgwatch detection settings).",
        ["mine"],
    )
    variables = [
        query_var("network", "Mining group", f"SELECT DISTINCT network FROM devices WHERE {kind}"),
        query_var(
            "site",
            "Mine",
            f"SELECT DISTINCT site FROM devices WHERE {kind} AND network IN ($network)",
        ),
        query_var(
            "location",
            "Location class",
            f"""
            SELECT DISTINCT coalesce(location, 'other') FROM devices
            WHERE {kind} AND network IN ($network) AND site IN ($site)
            """,
        ),
        query_var(
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
        graph(
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
        graph(
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
        table(
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
        stat(
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
            width=W_FULL,
        )
    )
    return with_detections(d, ids, detections_where("mine", with_location=True))
