"""Build every dashboard as Grafana JSON and write it where Grafana provisions it from."""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from core.settings import DetectionSettings
from dashboards.alerting import alerts_dashboard
from dashboards.cems import cems_dashboard
from dashboards.city import city_dashboard
from dashboards.completeness import completeness_dashboard
from dashboards.mine import mine_dashboard
from dashboards.pipeline import pipeline_dashboard
from dashboards.quarterly import quarterly_dashboard
from dashboards.region import region_dashboard

__all__ = ["DASHBOARD_UIDS", "build_dashboards", "dashboard_json", "export_dashboards"]

DASHBOARD_UIDS = (
    "ghgwatch-city",
    "ghgwatch-cems",
    "ghgwatch-mine",
    "ghgwatch-completeness",
    "ghgwatch-pipeline",
    "ghgwatch-region",
    "ghgwatch-alerts",
    "ghgwatch-quarterly",
)


def build_dashboards(detection: DetectionSettings | None = None) -> dict[str, dict[str, object]]:
    """Build every dashboard as Grafana JSON.

    Args:
        detection: the detection settings whose mine CH4 levels the mine dashboard draws
            (default: the regulation defaults).

    Returns:
        Dashboard JSON objects keyed by dashboard uid.
    """
    det = detection if detection is not None else DetectionSettings()
    boards = [
        city_dashboard(),
        cems_dashboard(det),
        mine_dashboard(det),
        completeness_dashboard(),
        pipeline_dashboard(),
        region_dashboard(),
        alerts_dashboard(),
        quarterly_dashboard(),
    ]
    out: dict[str, dict[str, object]] = {}
    for board in boards:
        data = json.loads(json.dumps(board.build(), cls=JSONEncoder))
        out[str(data["uid"])] = data
    return out


def dashboard_json(dashboard: dict[str, object]) -> str:
    """The stable text form written to disk (sorted keys, two-space indent, final newline)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_dashboards(out_dir: Path, detection: DetectionSettings | None = None) -> list[Path]:
    """Write every dashboard to ``out_dir/<uid>.json``.

    Args:
        out_dir: the folder Grafana provisions dashboards from.
        detection: see :func:`build_dashboards`.

    Returns:
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, board in build_dashboards(detection).items():
        path = out_dir / f"{uid}.json"
        path.write_text(dashboard_json(board), encoding="utf-8")
        written.append(path)
    return written
