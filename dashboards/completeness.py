"""The data-completeness dashboard: readings and valid minutes per device and hour."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    READINGS_1M,
    SILENT_AFTER,
    VALID_HOUR_MINUTES,
    W_FULL,
    Board,
    DeviceFilter,
    Level,
    device_levels,
    series_sql,
)

__all__ = ["completeness_dashboard"]

_DESCRIPTION = (
    "Readings per device per hour against what the device normally sends, and valid"
    f" minutes per hour against the HJ 76 rule (a valid hour has ≥ {VALID_HOUR_MINUTES}"
    " valid minutes)."
)


def completeness_dashboard() -> dash_b.Dashboard:
    """The completeness dashboard: HJ 76 valid minutes, readings against expected, silence."""
    devices = DeviceFilter(
        None,
        [Level("kind", "Source kind", "{t}kind"), *device_levels("Network", "Site", "Device")],
    )
    where = devices.where()
    b = Board("ghgwatch-completeness", "Data completeness", _DESCRIPTION, ["quality"], devices)
    b.graph(
        "Valid minutes per hour",
        "Minutes per hour with at least one reading flagged N, per device. Below the dashed"
        f" line ({VALID_HOUR_MINUTES}) the hour is not valid under HJ 76.",
        series_sql(
            READINGS_1M,
            "r.bucket",
            "r.device_id",
            "count(DISTINCT r.bucket) FILTER (WHERE r.count > 0) AS valid_minutes",
            where,
            interval="1h",
        ),
        unit="none",
        width=W_FULL,
        lines=[(None, "red"), (float(VALID_HOUR_MINUTES), "green")],
    )
    b.table(
        "Readings per device per hour vs expected",
        "expected = 60 × the device's median readings per minute over the range (all"
        " metrics, all flags); completeness = readings / expected.",
        f"""
        WITH m AS (
          SELECT r.bucket, r.device_id, sum(r.n_all) AS n, sum(r.count) AS n_valid
          FROM {READINGS_1M}
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
    b.table(
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
    return b.dashboard
