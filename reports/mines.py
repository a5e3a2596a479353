"""Mines and gas sites section: threshold exceedances, gas releases, time to acknowledge,
silent-sensor hours.

Per site (``network/site``), from what the detection and alert services stored:

- exceedances: ``threshold_alarm`` detections (methane at the alarm level of the sensor's
  location class) overlapping the quarter, their count and duration in sensor-hours
  (clipped to the quarter; one still open counts up to the quarter's end or now);
  ``power_cut`` detections are counted beside them (they lie inside an alarm episode);
- gas-release events: ``release`` detections starting in the quarter;
- time to acknowledge: the site's warning and critical alerts starting in the quarter,
  minutes from the alert's start to its acknowledgement (median, maximum, unacknowledged);
- silent-sensor hours: hours each sensor was expected and sent nothing (``readings_1d``).

Levels (``reports`` settings): exceedance hours beyond the site's allowed hours
(``targets.mine_allowed_exceedance_h``, default ``reports.default_allowed_exceedance_h``)
by ``exceedance_over_allowed_h``; release events by ``release_events``; the median time to
acknowledge by ``ack_median_min``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reports.completeness import device_coverage
from reports.model import (
    Column,
    Figure,
    Section,
    SectionContext,
    SourceWarning,
    Table,
)
from reports.plots import LEVEL_COLORS, bar_png
from reports.rules import Decision, target_map

__all__ = ["mines_section"]

_DETECTIONS_SQL = """
SELECT network, site, min(kind) AS kind,
       count(*) FILTER (WHERE detector = 'threshold_alarm') AS exceedances,
       coalesce(sum(extract(epoch FROM least(coalesce(ended_at, $2), $2, $3)
                                      - greatest(started_at, $1)))
                FILTER (WHERE detector = 'threshold_alarm'), 0)::float8 / 3600 AS exceedance_h,
       count(*) FILTER (WHERE detector = 'power_cut') AS power_cuts,
       count(*) FILTER (WHERE detector = 'release' AND started_at >= $1) AS releases
FROM detections
WHERE kind IN ('mine', 'leak') AND detector IN ('threshold_alarm', 'power_cut', 'release')
  AND started_at < $2 AND (ended_at IS NULL OR ended_at > $1)
GROUP BY 1, 2
"""

_ALERTS_SQL = """
SELECT network, site, count(*) AS alerts, count(acknowledged_at) AS acked,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM acknowledged_at - started_at) / 60) AS ack_median_min,
       max(extract(epoch FROM acknowledged_at - started_at) / 60)::float8 AS ack_max_min
FROM alerts
WHERE kind IN ('mine', 'leak') AND severity IN ('warning', 'critical')
  AND detector <> 'quarterly_warning' AND started_at >= $1 AND started_at < $2
GROUP BY 1, 2
"""


async def mines_section(ctx: SectionContext) -> Section:
    """Exceedances, releases, acknowledgement and silence per mine and gas site."""
    ctx.progress("mines and gas sites: exceedances, releases, acknowledgement")
    q = ctx.quarter
    start, end = q.start(ctx.tz), q.end(ctx.tz)
    asof = min(end, datetime.now(UTC))
    sites: dict[str, dict[str, Any]] = {}

    def site(network: str, name: str, kind: str) -> dict[str, Any]:
        return sites.setdefault(
            f"{network}/{name}",
            {
                "network": network,
                "kind": kind,
                "sensors": 0,
                "exceedances": 0,
                "exceedance_h": 0.0,
                "power_cuts": 0,
                "releases": 0,
                "alerts": 0,
                "unacknowledged": 0,
                "ack_median_min": None,
                "ack_max_min": None,
                "silent_h": 0.0,
            },
        )

    heard = False
    for c in await device_coverage(ctx, ("mine", "leak")):
        s = site(c.network, c.site, c.kind)
        s["sensors"] += 1
        s["silent_h"] += c.silent_h
        heard = heard or c.data_h > 0
    for r in await ctx.conn.fetch(_DETECTIONS_SQL, start, end, asof):
        heard = True
        s = site(r["network"], r["site"], r["kind"])
        s.update(
            exceedances=r["exceedances"],
            exceedance_h=r["exceedance_h"],
            power_cuts=r["power_cuts"],
            releases=r["releases"],
        )
    for r in await ctx.conn.fetch(_ALERTS_SQL, start, end):
        key = f"{r['network']}/{r['site']}"
        if key in sites:
            sites[key].update(
                alerts=r["alerts"],
                unacknowledged=r["alerts"] - r["acked"],
                ack_median_min=r["ack_median_min"],
                ack_max_min=r["ack_max_min"],
            )
    allowed = target_map(ctx.settings, "mine_allowed_exceedance_h")
    rules = ctx.settings.reports
    section = Section(key="mines", title_zh="煤矿与油气站点", title_en="Mines and gas sites")
    table = Table(
        key="mines",
        title_zh="站点超限、释放与响应",
        title_en="Exceedances, releases and response per site",
        columns=[
            Column(key="site", title_zh="站点", title_en="site"),
            Column(key="kind", title_zh="类型", title_en="kind"),
            Column(key="sensors", title_zh="传感器", title_en="sensors"),
            Column(key="exceedances", title_zh="超限次数", title_en="exceedances"),
            Column(key="exceedance_h", title_zh="超限时长", title_en="exceedance", unit="h"),
            Column(key="allowed_h", title_zh="允许时长", title_en="allowed", unit="h"),
            Column(key="power_cuts", title_zh="断电次数", title_en="power cuts"),
            Column(key="releases", title_zh="释放事件", title_en="releases"),
            Column(
                key="ack_median_min", title_zh="确认中位时间", title_en="ack median", unit="min"
            ),
            Column(key="unacknowledged", title_zh="未确认", title_en="unacknowledged"),
            Column(key="silent_h", title_zh="传感器无数据小时", title_en="silent", unit="h"),
            Column(key="level", title_zh="预警等级", title_en="level"),
        ],
        note_zh="超限时长按传感器小时计;确认时间从报警开始至值班确认。",
        note_en="Exceedance in sensor-hours at the alarm level; time to acknowledge from the"
        " alert's start to its acknowledgement.",
    )
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(sites):
        s = sites[key]
        allow = float(allowed.get(key, rules.default_allowed_exceedance_h))
        d = Decision()
        if s["exceedance_h"] > 0:
            d.check(
                s["exceedance_h"] - allow,
                rules.exceedance_over_allowed_h,
                f"超限 {s['exceedance_h']:.1f} 小时,超过允许的 {allow:g} 小时",
                f"{s['exceedances']} exceedances, {s['exceedance_h']:.1f} h at the alarm level,"
                f" {{value:.1f}} h beyond the {allow:g} h allowed",
            )
        d.check(
            float(s["releases"]),
            rules.release_events,
            "气体释放事件 {value:.0f} 次",
            "{value:.0f} gas-release events",
        )
        d.check(
            s["ack_median_min"],
            rules.ack_median_min,
            "报警确认中位时间 {value:.0f} 分钟",
            "median time to acknowledge {value:.0f} min",
        )
        figures = {
            k: (None if s[k] is None else float(s[k]))
            for k in (
                "sensors",
                "exceedances",
                "exceedance_h",
                "power_cuts",
                "releases",
                "alerts",
                "unacknowledged",
                "ack_median_min",
                "ack_max_min",
                "silent_h",
            )
        }
        figures["allowed_h"] = allow
        out[key] = {**figures, "level": d.level}
        table.rows.append({"site": key, "kind": s["kind"], **figures, "level": d.level})
        section.warnings.append(
            SourceWarning(
                source_type="mine" if s["kind"] == "mine" else "leak_site",
                source_id=key,
                region=s["network"],
                level=d.level,
                reasons_zh=d.reasons_zh,
                reasons_en=d.reasons_en,
                figures=figures,
            )
        )
    if table.rows:
        section.tables.append(table)
        worst = sorted(table.rows, key=lambda r: -float(r["exceedance_h"] or 0))[:30]
        section.figures.append(
            Figure(
                key="mine_exceedance",
                title_zh="各站点超限时长",
                title_en="Hours at the alarm level per site",
                png=bar_png(
                    "Sensor-hours at the alarm level",
                    [str(r["site"]) for r in worst],
                    [float(r["exceedance_h"] or 0) for r in worst],
                    "h",
                    colors=[LEVEL_COLORS[str(r["level"])] for r in worst],
                ),
            )
        )
    else:
        section.notes_zh.append(f"{q} 无煤矿或油气站点数据。")
        section.notes_en.append(f"No mine or gas-site data stored for {q}.")
    section.data = {"has_data": heard, "sites": out}
    return section
