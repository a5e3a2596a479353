"""The data-completeness dashboard: readings and valid minutes per device and hour."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    SILENT_AFTER,
    VALID_HOUR_MINUTES,
    W_FULL,
    PanelIds,
    dashboard,
    graph,
    query_var,
    table,
)

__all__ = ["completeness_dashboard"]


def completeness_dashboard() -> dash_b.Dashboard:
    ids = PanelIds()
    where = (
        "d.kind IN ($kind) AND d.network IN ($network) AND d.site IN ($site)"
        " AND d.device_id IN ($device)"
    )
    d = dashboard(
        "ghgwatch-completeness",
        "Data completeness",
        "Readings per device per hour against what the device normally sends, and valid"
        f" minutes per hour against the HJ 76 rule (a valid hour has ≥ {VALID_HOUR_MINUTES}"
        " valid minutes).",
        ["quality"],
    )
    variables = [
        query_var("kind", "Source kind", "SELECT DISTINCT kind FROM devices"),
        query_var(
            "network", "Network", "SELECT DISTINCT network FROM devices WHERE kind IN ($kind)"
        ),
        query_var(
            "site",
            "Site",
            "SELECT DISTINCT site FROM devices WHERE kind IN ($kind) AND network IN ($network)",
        ),
        query_var(
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
        graph(
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
            width=W_FULL,
            lines=[(None, "red"), (float(VALID_HOUR_MINUTES), "green")],
        )
    )
    d = d.with_panel(
        table(
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
        table(
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
