"""dashboards: the monitoring centre's Grafana dashboards as code, built with the Grafana SDK.

One module per dashboard (:mod:`dashboards.city`, :mod:`dashboards.cems`,
:mod:`dashboards.mine`, :mod:`dashboards.completeness`, :mod:`dashboards.pipeline`,
:mod:`dashboards.quarterly`) composes
the panel builders of :mod:`dashboards.panels`. ``ghgwatch grafana export`` writes
:func:`build_dashboards` to ``deploy/grafana/dashboards``, which Grafana provisions
(``deploy/grafana/provisioning``). The SQL reads the tables and aggregates of
``processors.storage`` (``devices``, ``readings``, ``readings_1m``, ``dead_letters``) and
what the detection service writes (``detections``, ``derived``, ``city_enhancement_1h``);
the quarterly-status dashboard reads the issued reports (``quarterly_warnings``);
emission rates are the engine's derived series, never recomputed in SQL.
``tests/dashboards`` runs every query against a migrated database.
"""

from dashboards.export import DASHBOARD_UIDS, build_dashboards, dashboard_json, export_dashboards
from dashboards.panels import PG_DATASOURCE_UID, PROMETHEUS_DATASOURCE_UID, SqlTarget

__all__ = [
    "DASHBOARD_UIDS",
    "PG_DATASOURCE_UID",
    "PROMETHEUS_DATASOURCE_UID",
    "SqlTarget",
    "build_dashboards",
    "dashboard_json",
    "export_dashboards",
]
