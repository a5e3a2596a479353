"""Completeness section: every source's valid hours against the validity rules.

A source with poor data is itself a warning: the report cannot vouch for what it did not
measure. Per device, the hours it was expected (the quarter, from when it was first seen,
up to now for a quarter still running), the hours with any reading and the valid hours
(``reports.min_valid_readings_per_hour`` per kind, in ``readings_1d``) of its kind's
primary metric (``reports.primary_metric``). Sources are CEMS units (``unit``), mines
(``mine``: every sensor of the site), gas sites (``leak_site``) and city stations
(``device``). share = valid hours / expected hours; the level follows the shortfall
against the source's requirement (``reports.completeness_shortfall``: default yellow below
the requirement, orange 10 points below, red 25 points below).

The requirement is ``targets.completeness_required`` of the most specific key that names
the source (:func:`required_share`): its own id (a unit's or city station's device id, a
mine's or gas site's ``network/site``), then the ``network/site`` of a unit (its plant) or
station (its site), then its kind (``cems``, ``city``, ``mine``, ``leak``). A mine or gas
site is judged as a whole, so the device id of one of its sensors names no source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from reports.model import (
    Column,
    Figure,
    Section,
    SectionContext,
    SourceType,
    SourceWarning,
    Table,
    worst_level,
)
from reports.plots import LEVEL_COLORS, bar_png
from reports.rules import Decision, required_share, target_map

__all__ = ["Coverage", "completeness_section", "device_coverage", "required_share", "source_of"]

_SOURCE_TYPE: dict[str, SourceType] = {
    "cems": "unit",
    "mine": "mine",
    "leak": "leak_site",
    "city": "device",
}
_WORST_SHOWN = 40

_COVERAGE_SQL = """
WITH pm AS (
    SELECT * FROM unnest($4::text[], $5::text[]) AS t(kind, metric)
), dev AS (
    SELECT d.device_id, d.kind, d.network, d.site, d.first_seen, pm.metric
    FROM devices d JOIN pm USING (kind)
    WHERE d.first_seen < $6 AND d.kind = ANY ($7::text[])
), agg AS (
    SELECT x.device_id, sum(x.valid_hours) AS valid_h, sum(x.data_hours) AS data_h
    FROM readings_1d x JOIN dev USING (device_id, metric)
    WHERE x.day >= ($1 AT TIME ZONE $3)::date AND x.day < ($2 AT TIME ZONE $3)::date
    GROUP BY 1
)
SELECT dev.device_id, dev.kind, dev.network, dev.site,
       greatest(0, extract(epoch FROM $6 - greatest($1, date_trunc('hour', dev.first_seen)))
                   / 3600)::float8 AS expected_h,
       coalesce(agg.valid_h, 0)::float8 AS valid_h,
       coalesce(agg.data_h, 0)::float8 AS data_h
FROM dev LEFT JOIN agg USING (device_id)
"""


@dataclass(frozen=True, slots=True)
class Coverage:
    """One device's hours in the quarter."""

    device_id: str
    kind: str
    network: str
    site: str
    expected_h: float
    valid_h: float
    data_h: float

    @property
    def silent_h(self) -> float:
        """Expected hours with no reading at all."""
        return max(0.0, self.expected_h - self.data_h)


def source_of(c: Coverage) -> tuple[SourceType, str]:
    """The report source a device belongs to (a unit, a mine or gas site, a city station)."""
    st = _SOURCE_TYPE.get(c.kind, "device")
    if st in {"mine", "leak_site"}:
        return st, f"{c.network}/{c.site}"
    return st, c.device_id


async def device_coverage(
    ctx: SectionContext, kinds: tuple[str, ...] = ("cems", "city", "mine", "leak")
) -> list[Coverage]:
    """Expected, valid and data hours per device of ``kinds`` (devices x days of input)."""
    start, end = ctx.quarter.start(ctx.tz), ctx.quarter.end(ctx.tz)
    asof = min(end, datetime.now(UTC))
    pm = ctx.settings.reports.primary_metric
    pm_kinds = sorted(pm)
    rows = await ctx.conn.fetch(
        _COVERAGE_SQL,
        start,
        end,
        ctx.tz,
        pm_kinds,
        [pm[k] for k in pm_kinds],
        asof,
        list(kinds),
    )
    return [
        Coverage(
            r["device_id"],
            r["kind"],
            r["network"],
            r["site"],
            r["expected_h"],
            r["valid_h"],
            r["data_h"],
        )
        for r in rows
    ]


async def completeness_section(ctx: SectionContext) -> Section:
    """Valid hours per source against its requirement; poor data is a warning."""
    ctx.progress("completeness: valid hours per source")
    cov = await device_coverage(ctx)
    required = target_map(ctx.settings, "completeness_required")
    rule = ctx.settings.reports.completeness_shortfall
    section = Section(
        key="completeness",
        title_zh="数据完整性",
        title_en="Data completeness",
    )
    acc: dict[tuple[SourceType, str], list[Coverage]] = {}
    for c in cov:
        acc.setdefault(source_of(c), []).append(c)
    rows = []
    for (st, sid), devs in acc.items():
        expected = sum(d.expected_h for d in devs)
        valid = sum(d.valid_h for d in devs)
        data_h = sum(d.data_h for d in devs)
        silent = sum(d.silent_h for d in devs)
        kind = devs[0].kind
        share = valid / expected if expected > 0 else None
        need = required_share(required, kind, sid)
        d = Decision()
        if share is not None and need is not None:
            d.check(
                need - share,
                rule,
                f"有效小时率 {share:.1%} 低于要求 {need:.0%}",
                f"valid hours {share:.1%} of the expected, below the required {need:.0%}",
            )
        if data_h == 0 and expected > 0:
            d.levels.append("red")
            d.reasons_zh.append("本季度无数据")
            d.reasons_en.append(f"no data at all in {ctx.quarter}")
        figures: dict[str, float | None] = {
            "sensors": float(len(devs)),
            "expected_h": expected,
            "valid_h": valid,
            "silent_h": silent,
            "valid_share": share,
            "required_share": need,
        }
        rows.append((st, sid, kind, devs[0].network, d, figures))
    rows.sort(key=lambda r: r[5]["valid_share"] if r[5]["valid_share"] is not None else 2.0)
    table = Table(
        key="completeness",
        title_zh="数据完整性最差的数据源",
        title_en=f"Sources with the poorest data (worst {_WORST_SHOWN})",
        columns=[
            Column(key="source", title_zh="数据源", title_en="source"),
            Column(key="kind", title_zh="类型", title_en="kind"),
            Column(key="sensors", title_zh="设备数", title_en="devices"),
            Column(key="expected_h", title_zh="应有小时", title_en="expected", unit="h"),
            Column(key="valid_h", title_zh="有效小时", title_en="valid", unit="h"),
            Column(key="silent_h", title_zh="无数据小时", title_en="silent", unit="h"),
            Column(key="valid_pct", title_zh="有效率", title_en="valid share", unit="%"),
            Column(key="required_pct", title_zh="要求", title_en="required", unit="%"),
            Column(key="level", title_zh="预警等级", title_en="level"),
        ],
        note_zh="有效小时:达到该类数据源有效性规则的小时(CEMS 每小时至少 45 个有效分钟值)。",
        note_en="Valid hour: an hour meeting the source kind's validity rule (CEMS: at least"
        " 45 valid minute values, HJ 75).",
    )
    for st, sid, kind, _net, d, f in rows[:_WORST_SHOWN]:
        share, need = f["valid_share"], f["required_share"]
        table.rows.append(
            {
                "source": f"{st} {sid}",
                "kind": kind,
                "sensors": int(f["sensors"] or 0),
                "expected_h": f["expected_h"],
                "valid_h": f["valid_h"],
                "silent_h": f["silent_h"],
                "valid_pct": None if share is None else 100 * share,
                "required_pct": None if need is None else 100 * need,
                "level": d.level,
            }
        )
    for st, sid, _kind, net, d, f in rows:  # every source: green ones too (the dashboard)
        section.warnings.append(
            SourceWarning(
                source_type=st,
                source_id=sid,
                region=net,
                level=d.level,
                reasons_zh=d.reasons_zh,
                reasons_en=d.reasons_en,
                figures=f,
            )
        )
    if rows:
        section.tables.append(table)
        shown = rows[: min(len(rows), 30)]
        section.figures.append(
            Figure(
                key="completeness",
                title_zh="有效小时率最低的数据源",
                title_en="Valid-hour share of the poorest sources",
                png=bar_png(
                    "Valid hours / expected hours",
                    [r[1] for r in shown],
                    [100 * (r[5]["valid_share"] or 0.0) for r in shown],
                    "%",
                    colors=[LEVEL_COLORS[r[4].level] for r in shown],
                ),
            )
        )
    else:
        section.notes_zh.append(f"{ctx.quarter} 无任何设备登记或数据。")
        section.notes_en.append(f"No devices or data stored for {ctx.quarter}.")
    levels = [r[4].level for r in rows]
    section.data = {
        "has_data": any(r[5]["valid_h"] for r in rows),
        "sources": len(rows),
        "devices": len(cov),
        "worst_level": worst_level(levels),
        "by_source": {f"{r[0]}:{r[1]}": {**r[5], "level": r[4].level} for r in rows},
    }
    return section
