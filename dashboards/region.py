"""The region overview: Baotou and Ordos, every site on a map, data flowing or not."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    READINGS_1M,
    SILENT_AFTER,
    W_HALF,
    Board,
    DeviceFilter,
    Level,
    series_sql,
)

__all__ = ["REGION", "region_dashboard"]

# The region of a device: the city its network is named after, else by latitude (the Yellow
# River, about 40.45° N here, separates Baotou to the north from Ordos to the south).
REGION = (
    "CASE WHEN {t}network LIKE 'baotou%' THEN 'Baotou'"
    " WHEN {t}network LIKE 'ordos%' THEN 'Ordos'"
    " WHEN {t}lat IS NULL THEN 'unplaced'"
    " WHEN {t}lat >= 40.45 THEN 'Baotou' ELSE 'Ordos' END"
)
# Between Baotou and Ordos (Kangbashi), zoomed to show both cities.
_CENTER = (40.1, 109.9)
_ZOOM = 7.5

_DESCRIPTION = (
    "Baotou and Ordos at a glance: every site on a map (coordinates from devices.lat/lon),"
    " sources per kind and region, which of them are reporting, readings flowing per region,"
    " and ghgwatch alerts as annotations."
)


def region_dashboard() -> dash_b.Dashboard:
    """The region overview: map of sites, sources and reporting per region and kind."""
    region = Level("region", "Region", REGION)
    devices = DeviceFilter(None, [region, Level("kind", "Source kind", "{t}kind")])
    where = devices.where()
    reg = region.col("d")
    b = Board("ghgwatch-region", "Region overview", _DESCRIPTION, ["region"], devices)
    b.alert_annotations()
    b.stat(
        "Sources reporting",
        f"Sources per region that sent data within {SILENT_AFTER}, of all known ones.",
        f"""
        SELECT {reg} AS region,
               count(*) FILTER (WHERE d.last_seen > now() - interval '{SILENT_AFTER}')
                 AS reporting
        FROM devices d WHERE {where}
        GROUP BY 1 ORDER BY 1
        """,
        unit="none",
        width=W_HALF,
    )
    b.stat(
        "Sources silent",
        f"Sources per region with no data for more than {SILENT_AFTER}.",
        f"""
        SELECT {reg} AS region,
               count(*) FILTER (WHERE d.last_seen <= now() - interval '{SILENT_AFTER}')
                 AS silent
        FROM devices d WHERE {where}
        GROUP BY 1 ORDER BY 1
        """,
        unit="none",
        width=W_HALF,
    )
    b.geomap(
        "Sites",
        "One marker per site at the mean position of its devices (devices.lat/lon, set by"
        " the device registry; devices without a position are listed in the table below"
        f" only). Green: at least one device reported within {SILENT_AFTER}; red: none.",
        f"""
        SELECT d.network || '/' || d.site AS site, {reg} AS region,
               string_agg(DISTINCT d.kind, ',') AS kinds,
               avg(d.lat) AS latitude, avg(d.lon) AS longitude, count(*) AS devices,
               count(*) FILTER (WHERE d.last_seen > now() - interval '{SILENT_AFTER}')
                 AS reporting,
               max(d.last_seen) AS last_seen
        FROM devices d
        WHERE d.lat IS NOT NULL AND d.lon IS NOT NULL AND {where}
        GROUP BY d.network, d.site, 2 ORDER BY 1
        """,
        center=_CENTER,
        zoom=_ZOOM,
    )
    b.table(
        "Sources per region and kind",
        "Known sources, how many report, the newest data and the readings stored; sources"
        " without coordinates count here too.",
        f"""
        SELECT {reg} AS region, d.kind, count(*) AS sources,
               count(*) FILTER (WHERE d.last_seen > now() - interval '{SILENT_AFTER}')
                 AS reporting,
               count(*) FILTER (WHERE d.lat IS NULL OR d.lon IS NULL) AS without_position,
               max(d.last_seen) AS last_seen, sum(d.readings_count) AS readings
        FROM devices d WHERE {where}
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        width=W_HALF,
    )
    b.graph(
        "Readings stored per region",
        "Readings per second, by device time, from the 1-minute aggregates: a line that"
        " drops to zero is a region whose data stopped flowing.",
        series_sql(
            READINGS_1M,
            "r.bucket",
            reg,
            "sum(r.n_all) / ($__interval_ms / 1000.0) AS readings_per_s",
            where,
        ),
        unit="reqps",
    )
    return b.dashboard
