"""The coal-mine methane dashboard: CH4 by location class against its alarm levels."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from core.settings import DetectionSettings
from dashboards.panels import (
    READINGS_1M,
    SILENT_AFTER,
    W_FULL,
    Board,
    DeviceFilter,
    Level,
    series_sql,
)

__all__ = ["mine_dashboard"]

_DESCRIPTION = (
    "CH4 (% vol) at coal-mine sensors by location class, against the alarm and power-cut"
    " levels of the Coal Mine Safety Regulations 2022 (ghgwatch detection settings)."
)

_LOCATION = "coalesce(d.location, 'other')"
# Colours of the dashed level lines, lowest level first (the last repeats).
_PALETTE = ("yellow", "orange", "red", "dark-red", "purple")


def _levels_values(detection: DetectionSettings) -> str:
    """The alarm and power-cut levels per location class as a SQL ``VALUES`` list."""
    rows = []
    for location, lv in sorted(detection.mine_levels.items()):
        alarm = "NULL" if lv.alarm_pct_vol is None else repr(float(lv.alarm_pct_vol))
        cut = "NULL" if lv.cut_pct_vol is None else repr(float(lv.cut_pct_vol))
        rows.append(f"('{location}', {alarm}::float8, {cut}::float8)")
    return "VALUES " + ", ".join(rows)


def _level_lines(detection: DetectionSettings) -> list[tuple[float | None, str]]:
    """Dashed lines at every alarm and power-cut level in use."""
    levels = sorted(
        {lv.alarm_pct_vol for lv in detection.mine_levels.values() if lv.alarm_pct_vol}
        | {lv.cut_pct_vol for lv in detection.mine_levels.values() if lv.cut_pct_vol}
    )
    lines: list[tuple[float | None, str]] = [(None, "green")]
    lines += [(lvl, _PALETTE[min(i, len(_PALETTE) - 1)]) for i, lvl in enumerate(levels)]
    return lines


def mine_dashboard(detection: DetectionSettings) -> dash_b.Dashboard:
    """The mine dashboard.

    Args:
        detection: the detection settings whose CH4 levels per location class it draws.

    Returns:
        The dashboard builder.
    """
    devices = DeviceFilter(
        "mine",
        [
            Level("network", "Mining group", "{t}network"),
            Level("site", "Mine", "{t}site"),
            Level("location", "Location class", "coalesce({t}location, 'other')"),
            Level("device", "Sensor", "{t}device_id"),
        ],
    )
    where = devices.where()
    b = Board("ghgwatch-mine", "Coal-mine methane", _DESCRIPTION, ["mine"], devices)
    ch4 = f"r.metric = 'ch4_pct_vol' AND r.count > 0 AND {where}"
    lines = _level_lines(detection)
    b.row("Levels")
    b.graph(
        "Highest CH4 by location class",
        "The highest 1-minute maximum of any sensor in each location class. Dashed lines:"
        " the alarm and power-cut levels in use (they differ per class; see the table).",
        series_sql(READINGS_1M, "r.bucket", _LOCATION, "max(r.max) AS ch4_pct_vol", ch4),
        unit="percent",
        lines=lines,
    )
    b.alert_annotations("kind:mine")
    b.graph(
        "CH4 per sensor",
        "1-minute maximum CH4 per sensor.",
        series_sql(
            READINGS_1M,
            "r.bucket",
            f"d.device_id || ' (' || {_LOCATION} || ')'",
            "max(r.max) AS ch4_pct_vol",
            ch4,
        ),
        unit="percent",
        lines=lines,
    )
    b.table(
        "Sensors at or above their alarm level",
        "Sensors whose 1-minute maximum reached the alarm level of their location class in"
        " the selected range, with the power-cut level and the last minute above alarm.",
        f"""
        WITH lvl(location, alarm_pct_vol, cut_pct_vol) AS ({_levels_values(detection)})
        SELECT d.device_id AS sensor, {_LOCATION} AS location,
               max(r.max) AS max_ch4_pct_vol, lvl.alarm_pct_vol, lvl.cut_pct_vol,
               max(r.bucket) FILTER (WHERE r.max >= lvl.alarm_pct_vol) AS last_above_alarm,
               count(*) FILTER (WHERE r.max >= lvl.alarm_pct_vol) AS minutes_above_alarm
        FROM {READINGS_1M}
        JOIN lvl ON lvl.location = {_LOCATION}
        WHERE $__timeFilter(r.bucket) AND {ch4}
        GROUP BY 1, 2, 4, 5
        HAVING max(r.max) >= min(lvl.alarm_pct_vol)
        ORDER BY 3 DESC, 1
        """,
    )
    b.stat(
        "Sensors reporting",
        f"Sensors with a reading in the last {SILENT_AFTER} of the range, of all sensors selected.",
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
    b.detections()
    return b.dashboard
