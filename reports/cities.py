"""Cities section: mean urban CO2 enhancement above background, quarter on quarter and year
on year, against the city's baseline.

The enhancement is the detection service's derived series (a station's CO2 above its rolling
low-percentile background), read from the daily roll-up ``derived_1d``. A city's mean is
over all its stations' valid points in the quarter. Levels (``reports`` settings):

- year-on-year rise of the mean: ``city_change_pct`` (default yellow 5 %, orange 10 %,
  red 25 %); quarter-on-quarter rise by the same thresholds, but at most yellow (seasons);
- mean above the city's baseline (``targets.city_baseline_ppm``): ``city_over_baseline_pct``
  (default yellow above, orange 10 %, red 25 % above).
"""

from __future__ import annotations

from collections import defaultdict

from reports.aggregates import ENHANCEMENT_SERIES
from reports.model import (
    Column,
    Figure,
    Quarter,
    Section,
    SectionContext,
    SourceWarning,
    Table,
)
from reports.plots import lines_png
from reports.rules import Decision, pct_change, target_map

__all__ = ["cities_section", "city_means"]

TREND_QUARTERS = 5


async def city_means(
    ctx: SectionContext, quarters: list[Quarter]
) -> dict[str, dict[Quarter, float]]:
    """Mean enhancement (ppm) per city and quarter, from ``derived_1d`` (cities x days)."""
    start, end = quarters[0].start(ctx.tz), quarters[-1].end(ctx.tz)
    rows = await ctx.conn.fetch(
        """SELECT split_part(device_id, '/', 1) AS city, day, sum(sum) AS s, sum(n) AS n
           FROM derived_1d
           WHERE series = $1 AND day >= ($2 AT TIME ZONE $4)::date
             AND day < ($3 AT TIME ZONE $4)::date
           GROUP BY 1, 2""",
        ENHANCEMENT_SERIES,
        start,
        end,
        ctx.tz,
    )
    sums: dict[str, dict[Quarter, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        q = Quarter(r["day"].year, (r["day"].month - 1) // 3 + 1)
        acc = sums[r["city"]][q]
        acc[0] += float(r["s"] or 0.0)
        acc[1] += int(r["n"])
    return {city: {q: s / n for q, (s, n) in by_q.items() if n > 0} for city, by_q in sums.items()}


async def cities_section(ctx: SectionContext) -> Section:
    """Mean enhancement per city, its changes, the trend over five quarters, warnings."""
    ctx.progress("cities: urban CO2 enhancement")
    q = ctx.quarter
    quarters = [q]
    for _ in range(TREND_QUARTERS - 1):
        quarters.insert(0, quarters[0].previous())
    means = await city_means(ctx, quarters)
    baselines = target_map(ctx.settings, "city_baseline_ppm")
    rules = ctx.settings.reports
    section = Section(
        key="cities",
        title_zh="城市温室气体浓度增量",
        title_en="Cities: urban CO2 enhancement",
    )
    table = Table(
        key="cities",
        title_zh="城市平均增量(高于背景)",
        title_en="Mean enhancement above background per city",
        columns=[
            Column(key="city", title_zh="城市", title_en="city"),
            Column(key="mean_ppm", title_zh="本季度均值", title_en="mean", unit="ppm"),
            Column(key="prev_ppm", title_zh="上季度", title_en="previous quarter", unit="ppm"),
            Column(key="qoq_pct", title_zh="环比", title_en="quarter on quarter", unit="%"),
            Column(key="year_ago_ppm", title_zh="去年同期", title_en="a year ago", unit="ppm"),
            Column(key="yoy_pct", title_zh="同比", title_en="year on year", unit="%"),
            Column(key="baseline_ppm", title_zh="基准", title_en="baseline", unit="ppm"),
            Column(key="level", title_zh="预警等级", title_en="level"),
        ],
    )
    data: dict[str, dict[str, float | None]] = {}
    for city in sorted(means):
        by_q = means[city]
        mean = by_q.get(q)
        if mean is None:
            section.notes_zh.append(f"{city}:本季度无增量数据。")
            section.notes_en.append(f"{city}: no enhancement data in {q}.")
            continue
        prev, ago = by_q.get(q.previous()), by_q.get(q.year_ago())
        qoq, yoy = pct_change(mean, prev), pct_change(mean, ago)
        baseline = baselines.get(city)
        over = pct_change(mean, baseline) if baseline is not None else None
        d = Decision()
        d.check(
            yoy, rules.city_change_pct, "同比上升 {value:.1f}%", "up {value:.1f} % year on year"
        )
        d.check(
            qoq,
            rules.city_change_pct,
            "环比上升 {value:.1f}%",
            "up {value:.1f} % on the previous quarter",
            cap="yellow",
        )
        d.check(
            over,
            rules.city_over_baseline_pct,
            f"均值 {mean:.2f} ppm 高于基准 {baseline} ppm {{value:.1f}}%",
            f"mean {mean:.2f} ppm is {{value:.1f}} % above the baseline of {baseline} ppm",
        )
        if ago is None:
            section.notes_zh.append(f"{city}:无去年同期数据,未计算同比。")
            section.notes_en.append(f"{city}: no data a year ago; no year-on-year change.")
        if baseline is None:
            section.notes_zh.append(f"{city}:未配置基准。")
            section.notes_en.append(f"{city}: no baseline configured (targets.city_baseline_ppm).")
        figures = {
            "mean_ppm": mean,
            "prev_ppm": prev,
            "qoq_pct": qoq,
            "year_ago_ppm": ago,
            "yoy_pct": yoy,
            "baseline_ppm": baseline,
        }
        data[city] = figures
        table.rows.append({"city": city, **figures, "level": d.level})
        section.warnings.append(
            SourceWarning(
                source_type="city",
                source_id=city,
                region=city,
                level=d.level,
                reasons_zh=d.reasons_zh,
                reasons_en=d.reasons_en,
                figures=figures,
            )
        )
    if not table.rows:
        section.notes_zh.insert(0, f"{q} 无城市站增量数据。")
        section.notes_en.insert(0, f"No city enhancement data stored for {q}.")
    else:
        section.tables.append(table)
        labels = [str(x) for x in quarters]
        section.figures.append(
            Figure(
                key="city_trend",
                title_zh="近五个季度城市平均增量趋势",
                title_en="Mean enhancement per city, last five quarters",
                png=lines_png(
                    "Mean CO2 enhancement above background",
                    labels,
                    {c: [means[c].get(x) for x in quarters] for c in sorted(means)},
                    "ppm",
                ),
            )
        )
    section.data = {"has_data": bool(table.rows), "cities": data}
    return section
