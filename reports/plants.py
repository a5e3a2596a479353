"""Quarterly sections for CEMS units, plants and regions: totals, intensity, projection, levels.

Two section builders (:data:`reports.model.SectionBuilder`):

- :func:`plants_section`: per unit and plant the quarter's and the year-to-date CO2 (HJ 75-2017
  validity and substitution, :mod:`reports.accounting`), gross and net intensity against the
  class benchmark, the projected year total with its 90 % interval against the budget, and a
  warning level (:mod:`reports.targets`);
- :func:`regions_section`: the same summed per region (league/city) against its target.

Both read the stored unit-hours once per report (:mod:`reports.cems_store`). The data end of
a closed quarter is its end, so hours every unit left silent at its end are missing data like
any other; a quarter still running is analysed up to its latest stored unit-hour, and hours
after it are neither expected nor substituted. Days and months are local calendar
days of the report's time zone, taken at its UTC offset at the quarter start (China does not
change clocks). Plant and region uncertainties add their units' (full correlation: the
units share weather, dispatch and coal, so this is the cautious choice).
"""

from __future__ import annotations

import io
import itertools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from core.settings import Settings
from registry.store import RegistryStore
from reports.accounting import (
    RULE_NAMES,
    Projection,
    SubstitutionLimits,
    UnitHours,
    account_hours,
    month_is_valid,
    project_year,
    valid_days,
)
from reports.cems_store import (
    HourRows,
    MonthRates,
    read_hours,
    read_month_rates,
    units_stored_before,
)
from reports.model import (
    Cell,
    Column,
    Figure,
    Level,
    Quarter,
    Section,
    SectionContext,
    SourceWarning,
    Table,
)
from reports.targets import (
    Judgement,
    benchmark_g_co2_kwh,
    judge,
    plant_of,
    region_of,
    substitution_limits,
)
from wire import SourceKind

__all__ = [
    "CemsAnalysis",
    "PlantFigures",
    "UnitFigures",
    "analyse",
    "plants_section",
    "regions_section",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

_H_PER_DAY = 24
_KG_PER_T = 1_000.0  # t/MWh -> g/kWh: 10^6 g/t / 10^3 kWh/MWh
_FIG_DPI = 110


@dataclass(slots=True)
class SubstitutedRun:
    """A run of substituted hours of one unit in the quarter."""

    start: datetime
    hours: int
    rule: str
    t_per_h: float


@dataclass(slots=True)
class UnitFigures:
    """One unit's quarterly figures; None where a figure cannot be computed."""

    device_id: str
    plant: str
    region: str | None
    unit_class: str | None
    benchmark_g_kwh: float | None
    aux_power_frac: float
    aux_configured: bool
    expected_h: int  # the quarter's hours to the data end, less the stopped ones
    valid_h: int
    substituted_h: int
    site_pressure_h: int
    quarter_t: float | None
    substituted_t: float | None
    ytd_t: float | None
    energy_mwh: float
    gross_g_kwh: float | None
    net_g_kwh: float | None
    valid_days: int
    days: int
    valid_months: int
    months: int
    projection: Projection
    budget_t: float | None
    runs: list[SubstitutedRun] = field(default_factory=list)
    stopped_h: int = 0  # the quarter's hours the unit reported itself stopped (HJ 212 F)
    data_from: datetime | None = None  # its first stored hour, when it lies in this year
    # per calendar month 1-12 of the year: t (with substitutions; None after the data end or
    # unknown), and last year's from its monthly mean rate (None without it)
    monthly_t: list[float | None] = field(default_factory=lambda: [None] * 12)
    last_year_monthly_t: list[float | None] = field(default_factory=lambda: [None] * 12)
    level: Level = "green"
    judgement: Judgement = field(default_factory=Judgement)

    @property
    def completeness(self) -> float | None:
        return self.valid_h / self.expected_h if self.expected_h else None

    @property
    def intensity_ratio(self) -> float | None:
        if self.net_g_kwh is None or self.benchmark_g_kwh is None:
            return None
        return self.net_g_kwh / self.benchmark_g_kwh


@dataclass(slots=True)
class PlantFigures:
    """Summed figures of a plant or a region."""

    key: str
    region: str | None
    units: list[str]
    expected_h: int
    valid_h: int
    substituted_h: int
    quarter_t: float | None
    ytd_t: float | None
    gross_g_kwh: float | None
    net_g_kwh: float | None
    intensity_ratio: float | None
    projection: Projection
    budget_t: float | None
    level: Level = "green"
    judgement: Judgement = field(default_factory=Judgement)

    @property
    def completeness(self) -> float | None:
        return self.valid_h / self.expected_h if self.expected_h else None


@dataclass(slots=True)
class CemsAnalysis:
    """Everything the two sections show, computed once per report."""

    quarter: Quarter
    data_start: datetime
    data_end: datetime | None  # exclusive; None: no CEMS data in the quarter
    units: list[UnitFigures]
    plants: list[PlantFigures]
    regions: list[PlantFigures]
    unassigned_plants: list[str]


_CACHE: dict[int, tuple[weakref.ReferenceType[SectionContext], CemsAnalysis]] = {}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _sum(values: list[float | None]) -> float | None:
    return (
        None
        if not values or any(v is None for v in values)
        else float(sum(v for v in values if v is not None))
    )


def _configured_units(settings: Settings) -> set[str]:
    d = settings.detection
    return set(d.cems_sites) | set(d.cems_unit_class) | set(settings.targets.unit_budget_t)


def _rows_on_grid(rows: HourRows, unit: int, grid0_h: int, n: int) -> I64:
    """Indices of a unit's rows on the grid ``[grid0_h, grid0_h + n)`` (rows sorted by unit)."""
    lo, hi = np.searchsorted(rows.unit, [unit, unit + 1])
    sel = np.arange(lo, hi, dtype=np.int64)
    pos = rows.epoch_h[sel] - grid0_h
    return np.asarray(sel[(pos >= 0) & (pos < n)], np.int64)


def _from_first_hour(
    first: int,
    valid: BOOL,
    rate: F64,
    quarter_of: I64,
    limits: SubstitutionLimits,
    stopped: BOOL,
) -> UnitHours:
    """:func:`account_hours` from grid hour ``first`` on; before it nothing is valid,
    substituted or emitted (0 t), as for a unit not yet connected."""
    acc = account_hours(valid[first:], rate[first:], quarter_of[first:], limits, stopped[first:])
    if first == 0:
        return acc
    pad = np.zeros(first, bool)
    return UnitHours(
        valid=np.concatenate([pad, acc.valid]),
        emission_t=np.concatenate([np.zeros(first), acc.emission_t]),
        substituted=np.concatenate([pad, acc.substituted]),
        rule=np.concatenate([np.zeros(first, np.int8), acc.rule]),
        capture=np.concatenate([np.full(first, np.nan), acc.capture]),
        stopped=np.concatenate([pad, acc.stopped]),
    )


def _monthly(em: F64, month_no: I64, y_mask: BOOL) -> list[float | None]:
    """Per calendar month 1-12 of the year: the summed hourly emissions, None for a month with
    no hour on the grid (after the data end) or an unknown one."""
    sel = y_mask & np.isfinite(em)
    sums = np.bincount(month_no[sel], weights=em[sel], minlength=13)[1:]
    hours = np.bincount(month_no[y_mask], minlength=13)[1:]
    unknown = np.bincount(month_no[y_mask & ~np.isfinite(em)], minlength=13)[1:]
    return [float(v) if n and not u else None for v, n, u in zip(sums, hours, unknown, strict=True)]


def _last_year_rates(months: MonthRates, device: str) -> list[float | None]:
    """Last year's mean valid-hour rate of each month 1-12 (None: no valid hour that month)."""
    return [months.rate_t_h.get((device, m)) for m in range(1, 13)]


def _last_year_monthly(months: MonthRates, device: str, hours: I64) -> list[float | None]:
    """Last year's emission per month 1-12: its mean valid-hour rate times the month's hours."""
    rates = _last_year_rates(months, device)
    return [None if r is None else r * float(h) for r, h in zip(rates, hours.tolist(), strict=True)]


def _last_year_split(
    months: MonthRates, device: str, ly_month_of_hour: npt.NDArray[np.int64], split_h: int
) -> tuple[float | None, float | None]:
    """Last year's emissions before and after ``split_h`` hours into the year, from its shape."""
    rates = _last_year_rates(months, device)
    if any(r is None for r in rates):
        return None, None
    per_hour = np.asarray(rates, np.float64)[ly_month_of_hour - 1]
    k = min(max(split_h, 0), per_hour.shape[0])
    return float(per_hour[:k].sum()), float(per_hour[k:].sum())


async def analyse(ctx: SectionContext) -> CemsAnalysis:
    """Compute (once per context) the units', plants' and regions' figures of the quarter.

    Args:
        ctx: the section context.

    Returns:
        The analysis both sections render.
    """
    hit = _CACHE.get(id(ctx))
    if hit is not None and hit[0]() is ctx:
        return hit[1]
    result = await _analyse(ctx)
    key = id(ctx)
    _CACHE[key] = (weakref.ref(ctx), result)
    weakref.finalize(ctx, _CACHE.pop, key, None)
    return result


async def _analyse(ctx: SectionContext) -> CemsAnalysis:
    settings: Settings = ctx.settings
    t = settings.targets
    tz, q = ctx.tz, ctx.quarter
    q_start, q_end, y_start = q.start(tz), q.end(tz), q.year_start(tz)
    y_end = Quarter(q.year + 1, 1).start(tz)
    offset_h = int(
        (ZoneInfo(tz).utcoffset(q_start.replace(tzinfo=None)) or timedelta()) / timedelta(hours=1)
    )
    limits = substitution_limits(t)
    read_start = y_start - timedelta(hours=limits.max_lookback_h)
    ctx.progress("CEMS: reading unit-hours")
    rows = await read_hours(ctx.conn, read_start, q_end, detail_start=q_start)

    def epoch_h(d: datetime) -> int:
        return int(d.timestamp()) // 3600

    q0, q1, y0, y1, g0 = (
        epoch_h(q_start),
        epoch_h(q_end),
        epoch_h(y_start),
        epoch_h(y_end),
        epoch_h(read_start),
    )
    in_q = (rows.epoch_h >= q0) & (rows.epoch_h < q1)
    # a closed quarter is analysed to its end: a tail every unit left silent is missing data
    # (expected and substituted); a running one up to its latest stored unit-hour
    closed = (ctx.now or datetime.now(UTC)) >= q_end
    data_end_h = (q1 if closed else int(rows.epoch_h[in_q].max()) + 1) if in_q.any() else None
    end_h = data_end_h if data_end_h is not None else q0
    n = end_h - g0
    grid_h = np.arange(g0, end_h, dtype=np.int64)
    local = (grid_h + offset_h).astype("datetime64[h]")
    day_of = ((grid_h + offset_h) // _H_PER_DAY).astype(np.int64)
    month_of = local.astype("datetime64[M]")
    quarter_of = month_of.astype(np.int64) // 3  # months since 1970-01: quarters align
    q_mask = grid_h >= q0
    y_mask = grid_h >= y0
    q_days = np.unique(day_of[q_mask])
    full_day = (
        np.bincount(day_of[q_mask] - (q_days[0] if q_days.size else 0), minlength=q_days.size)
        == _H_PER_DAY
    )
    q_months = np.unique(month_of[q_mask])

    ly_start = Quarter(q.year - 1, 1).start(tz)
    ly_months = await read_month_rates(ctx.conn, ly_start, y_start, tz)
    ly_h0, ly_h1 = epoch_h(ly_start), y0
    ly_local = (np.arange(ly_h0, ly_h1, dtype=np.int64) + offset_h).astype("datetime64[h]")
    ly_month_of_hour = (ly_local.astype("datetime64[M]").astype(np.int64) % 12 + 1).astype(np.int64)
    ly_hours_per_month = np.bincount(ly_month_of_hour, minlength=13)[1:]
    month_no = (month_of.astype(np.int64) % 12 + 1).astype(np.int64)
    split_h = end_h - y0
    remaining_days = (y1 - end_h) / _H_PER_DAY

    # the device registry's CEMS units: listed even without data, and their benchmark class
    # is the registry's where it names one (as the detection service takes it)
    registered = {
        r.device_id: r.cems_class
        for r in await RegistryStore(ctx.conn).list_devices(enabled_only=True)
        if r.kind is SourceKind.CEMS
    }
    devices = sorted(set(rows.devices) | _configured_units(settings) | set(registered))
    index = {d: i for i, d in enumerate(rows.devices)}
    units: list[UnitFigures] = []
    ctx.progress(f"CEMS: accounting {len(devices)} units")
    stop_minutes = settings.detection.min_valid_minutes  # an hour this long stopped: stopped
    # a unit's accounting starts at its first stored hour: before it the unit was not yet
    # connected (or built), and nothing is expected, substituted or counted
    earlier = await units_stored_before(ctx.conn, rows.devices, read_start)
    for dev in devices:
        site = settings.detection.cems_site(dev)
        valid = np.zeros(n, bool)
        rate = np.full(n, np.nan)
        load = np.full(n, np.nan)
        site_p = np.zeros(n)
        stopped = np.zeros(n, bool)
        first = 0 if dev in earlier else n
        if dev in index and n > 0:
            sel = _rows_on_grid(rows, index[dev], g0, n)
            pos = rows.epoch_h[sel] - g0
            valid[pos] = rows.valid[sel]
            rate[pos] = rows.rate_t_h[sel]
            load[pos] = rows.load_mw[sel]
            site_p[pos] = np.nan_to_num(rows.site_pressure_minutes[sel])
            stopped[pos] = rows.stopped_minutes[sel] >= stop_minutes
            if pos.size and dev not in earlier:
                first = int(pos.min())
        acc = _from_first_hour(first, valid, rate, quarter_of, limits, stopped)
        inside = np.arange(n) >= first
        # no hour of the quarter stored for any unit: nothing is computed (not even zeros); a
        # unit stopped all along emitted 0 t
        known = bool(acc.valid.any() or acc.stopped.any()) and data_end_h is not None
        em = acc.emission_t
        qv = acc.valid & q_mask
        quarter_t = (
            float(np.nansum(em[q_mask])) if known and np.isfinite(em[q_mask]).all() else None
        )
        ytd_t = float(np.nansum(em[y_mask])) if known and np.isfinite(em[y_mask]).all() else None
        sub_q = acc.substituted & q_mask
        with_load = qv & np.isfinite(load) & (load > 0)
        energy = float(load[with_load].sum())
        gross = _KG_PER_T * float(rate[with_load].sum()) / energy if energy > 0 else None
        net = gross / (1.0 - site.aux_power_frac) if gross is not None else None
        # valid days and months of the quarter
        if q_days.size:
            counts, day_ok = valid_days(acc.valid[q_mask], day_of[q_mask] - q_days[0], q_days.size)
        else:
            counts, day_ok = np.zeros(0, np.int64), np.zeros(0, bool)
        valid_months = 0
        done_months = 0
        day_month = (
            q_days.astype("datetime64[D]").astype("datetime64[M]")
            if q_days.size
            else np.zeros(0, "datetime64[M]")
        )
        for m in q_months:
            in_m = day_month == m
            month_end_h = int((m + 1).astype("datetime64[h]").astype(np.int64)) - offset_h
            if month_end_h > end_h:
                continue  # the month is not over: no verdict yet
            done_months += 1
            if month_is_valid(int(day_ok[in_m].sum()), int(m.astype(np.int64) % 12 + 1)):
                valid_months += 1
        # the quarter's daily series, complete days only
        daily = np.bincount(
            day_of[q_mask] - (q_days[0] if q_days.size else 0),
            weights=np.nan_to_num(em[q_mask]),
            minlength=q_days.size,
        )
        day_known = full_day & (counts > 0)
        if known:
            ly_before, ly_rest = _last_year_split(ly_months, dev, ly_month_of_hour, split_h)
            projection = project_year(
                ytd_t if ytd_t is not None else 0.0,
                daily[day_known],
                remaining_days,
                min_days=t.projection_min_days,
                last_year_same_period_t=ly_before,
                last_year_rest_t=ly_rest,
            )
        else:
            projection = Projection(None, None, None, "no valid hour stored this year")
        runs: list[SubstitutedRun] = []
        if sub_q.any():
            # a run is split where its rule changes (a quarter boundary with another capture)
            code = np.where(sub_q, acc.rule, 0).astype(np.int16)
            change = np.flatnonzero(np.diff(np.concatenate([[0], code, [0]])) != 0)
            for s, e in itertools.pairwise(change):
                if code[s] == 0:
                    continue
                runs.append(
                    SubstitutedRun(
                        datetime.fromtimestamp(int(grid_h[s]) * 3600, ZoneInfo(tz)),
                        int(e - s),
                        RULE_NAMES[int(code[s])],
                        float(em[s]),
                    )
                )
        plant = plant_of(dev)
        unit_class = registered.get(dev) or site.unit_class
        bench = benchmark_g_co2_kwh(settings, unit_class)
        units.append(
            UnitFigures(
                device_id=dev,
                plant=plant,
                region=region_of(settings, plant),
                unit_class=unit_class,
                benchmark_g_kwh=bench,
                aux_power_frac=site.aux_power_frac,
                aux_configured=site.aux_configured,
                expected_h=int((q_mask & inside & ~acc.stopped).sum()),
                data_from=(
                    datetime.fromtimestamp(int(grid_h[first]) * 3600, ZoneInfo(tz))
                    if y0 <= g0 + first < end_h
                    else None
                ),
                stopped_h=int((q_mask & acc.stopped).sum()),
                valid_h=int(qv.sum()),
                substituted_h=int(sub_q.sum()),
                site_pressure_h=int((qv & (site_p > 0)).sum()),
                quarter_t=quarter_t,
                substituted_t=float(em[sub_q].sum()) if known else None,
                ytd_t=ytd_t,
                energy_mwh=energy,
                gross_g_kwh=gross,
                net_g_kwh=net,
                valid_days=int(day_ok.sum()),
                days=int(q_days.size),
                valid_months=valid_months,
                months=done_months,
                projection=projection,
                budget_t=t.unit_budget_t.get(dev),
                runs=runs,
                monthly_t=_monthly(em, month_no, y_mask) if known else [None] * 12,
                last_year_monthly_t=_last_year_monthly(ly_months, dev, ly_hours_per_month),
            )
        )
    for u in units:
        u.judgement = judge(
            settings,
            projected_ratio=_ratio(u.projection.total_t, u.budget_t),
            intensity_ratio=u.intensity_ratio,
            completeness=u.completeness if data_end_h is not None else None,
            source_id=u.device_id,
        )
        u.level = u.judgement.level
    plants = _group(settings, units, key=_plant_key, budget=t.plant_budget_t, is_plant=True)
    regions = _group(
        settings,
        [u for u in units if u.region is not None],
        key=_region_key,
        budget=t.region_target_t,
        is_plant=False,
    )
    for r in sorted(set(t.region_target_t) - {p.key for p in regions}):
        empty = PlantFigures(r, r, [], 0, 0, 0, None, None, None, None, None,
                             Projection(None, None, None, "no CEMS unit is assigned to it"),
                             t.region_target_t[r])  # fmt: skip
        # a target nobody can be measured against is itself a warning
        empty.judgement.raise_to(
            "orange", "有目标但没有已分配电厂的CEMS数据", "a target but no CEMS unit assigned"
        )
        empty.level = empty.judgement.level
        regions.append(empty)
    unassigned = sorted({u.plant for u in units if u.region is None})
    return CemsAnalysis(
        quarter=q,
        data_start=q_start,
        data_end=datetime.fromtimestamp(data_end_h * 3600, ZoneInfo(tz)) if data_end_h else None,
        units=units,
        plants=plants,
        regions=regions,
        unassigned_plants=unassigned,
    )


def _plant_key(u: UnitFigures) -> str:
    return u.plant


def _region_key(u: UnitFigures) -> str:
    return u.region or ""


def _group(
    settings: Settings,
    units: list[UnitFigures],
    *,
    key: Callable[[UnitFigures], str],
    budget: dict[str, float],
    is_plant: bool,
) -> list[PlantFigures]:
    """Sum units per plant (``is_plant``: budget falls back to the units' sum) or region."""
    groups: dict[str, list[UnitFigures]] = {}
    for u in units:
        groups.setdefault(key(u), []).append(u)
    out: list[PlantFigures] = []
    for name in sorted(groups):
        us = groups[name]
        energy = sum(u.energy_mwh for u in us)
        tv = sum((u.gross_g_kwh or 0.0) * u.energy_mwh for u in us) / _KG_PER_T  # t in valid hours
        net_energy = sum(u.energy_mwh * (1.0 - u.aux_power_frac) for u in us)
        bench = [u for u in us if u.benchmark_g_kwh is not None and u.net_g_kwh is not None]
        bench_t = (
            sum(
                u.benchmark_g_kwh * u.energy_mwh * (1.0 - u.aux_power_frac)
                for u in bench
                if u.benchmark_g_kwh is not None
            )
            / _KG_PER_T
        )
        bench_actual = sum((u.gross_g_kwh or 0.0) * u.energy_mwh for u in bench) / _KG_PER_T
        projections = [u.projection for u in us]
        if all(p.total_t is not None for p in projections):
            proj = Projection(
                float(sum(p.total_t or 0.0 for p in projections)),
                float(sum(p.sigma_t or 0.0 for p in projections)),
                "sum of units",
            )
        else:
            missing = [u.device_id for u in us if u.projection.total_t is None]
            proj = Projection(None, None, None, f"no projection for {', '.join(missing)}")
        own_budget = budget.get(name)
        if own_budget is None and is_plant:
            unit_budgets = [u.budget_t for u in us]
            own_budget = _sum(unit_budgets)
        expected = sum(u.expected_h for u in us)
        valid = sum(u.valid_h for u in us)
        gross = _KG_PER_T * tv / energy if energy > 0 else None
        fig = PlantFigures(
            key=name,
            region=us[0].region if is_plant else name,
            units=[u.device_id for u in us],
            expected_h=expected,
            valid_h=valid,
            substituted_h=sum(u.substituted_h for u in us),
            quarter_t=_sum([u.quarter_t for u in us]),
            ytd_t=_sum([u.ytd_t for u in us]),
            gross_g_kwh=gross,
            net_g_kwh=_KG_PER_T * tv / net_energy if net_energy > 0 else None,
            intensity_ratio=bench_actual / bench_t if bench_t > 0 else None,
            projection=proj,
            budget_t=own_budget,
        )
        fig.judgement = judge(
            settings,
            projected_ratio=_ratio(proj.total_t, own_budget),
            intensity_ratio=fig.intensity_ratio,
            completeness=fig.completeness if expected else None,
            source_id=fig.key if is_plant else "",
            what_en="budget" if is_plant else "target",
            what_zh="预算" if is_plant else "目标",
        )
        fig.level = fig.judgement.level
        out.append(fig)
    return out


# ---------------------------------------------------------------- rendering to the shapes


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


def _interval(p: Projection) -> float | None:
    return _r(p.half_90_t)


def _png(fig: MplFigure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)  # type: ignore[no-untyped-call]
    return buf.getvalue()


_UNIT_COLUMNS = [
    Column(key="unit", title_zh="机组", title_en="Unit"),
    Column(key="plant", title_zh="电厂", title_en="Plant"),
    Column(key="region", title_zh="盟市", title_en="Region"),
    Column(key="class", title_zh="机组类型", title_en="Class"),
    Column(key="quarter_t", title_zh="本季度排放", title_en="Quarter CO2", unit="t"),
    Column(key="substituted_h", title_zh="修约小时", title_en="Substituted hours", unit="h"),
    Column(key="substituted_t", title_zh="修约排放", title_en="Substituted CO2", unit="t"),
    Column(key="stopped_h", title_zh="停运小时", title_en="Stopped hours", unit="h"),
    Column(key="completeness", title_zh="有效小时率", title_en="Valid hours", unit="%"),
    Column(key="valid_days", title_zh="有效日", title_en="Valid days"),
    Column(key="valid_months", title_zh="有效月", title_en="Valid months"),
    Column(
        key="site_pressure_h", title_zh="配置气压小时", title_en="Hours on site pressure", unit="h"
    ),
    Column(key="gross_g_kwh", title_zh="发电排放强度", title_en="Gross intensity", unit="g/kWh"),
    Column(key="net_g_kwh", title_zh="供电排放强度", title_en="Net intensity", unit="g/kWh"),
    Column(key="aux", title_zh="厂用电率", title_en="Aux power", unit="%"),
    Column(key="benchmark_g_kwh", title_zh="基准", title_en="Benchmark", unit="g/kWh"),
    Column(key="intensity_ratio", title_zh="强度/基准", title_en="Intensity / benchmark", unit="%"),
    Column(key="ytd_t", title_zh="年初至今排放", title_en="Year to date", unit="t"),
    Column(key="projected_t", title_zh="预计全年", title_en="Projected year", unit="t"),
    Column(key="projected_pm_t", title_zh="90%区间±", title_en="90 % interval ±", unit="t"),
    Column(key="budget_t", title_zh="年度预算", title_en="Annual budget", unit="t"),
    Column(key="over_budget_t", title_zh="预计超出", title_en="Projected over budget", unit="t"),
    Column(key="projected_ratio", title_zh="预计/预算", title_en="Projected / budget", unit="%"),
    Column(key="level", title_zh="预警等级", title_en="Level"),
    Column(key="note", title_zh="说明", title_en="Note"),
]

_PLANT_COLUMNS = [
    Column(key="name", title_zh="名称", title_en="Name"),
    Column(key="region", title_zh="盟市", title_en="Region"),
    Column(key="units", title_zh="机组数", title_en="Units"),
    Column(key="quarter_t", title_zh="本季度排放", title_en="Quarter CO2", unit="t"),
    Column(key="substituted_h", title_zh="修约小时", title_en="Substituted hours", unit="h"),
    Column(key="completeness", title_zh="有效小时率", title_en="Valid hours", unit="%"),
    Column(key="gross_g_kwh", title_zh="发电排放强度", title_en="Gross intensity", unit="g/kWh"),
    Column(key="net_g_kwh", title_zh="供电排放强度", title_en="Net intensity", unit="g/kWh"),
    Column(key="intensity_ratio", title_zh="强度/基准", title_en="Intensity / benchmark", unit="%"),
    Column(key="ytd_t", title_zh="年初至今排放", title_en="Year to date", unit="t"),
    Column(key="projected_t", title_zh="预计全年", title_en="Projected year", unit="t"),
    Column(key="projected_pm_t", title_zh="90%区间±", title_en="90 % interval ±", unit="t"),
    Column(key="budget_t", title_zh="预算/目标", title_en="Budget / target", unit="t"),
    Column(key="over_budget_t", title_zh="预计超出", title_en="Projected over", unit="t"),
    Column(key="projected_ratio", title_zh="预计/预算", title_en="Projected / budget", unit="%"),
    Column(key="level", title_zh="预警等级", title_en="Level"),
    Column(key="note", title_zh="说明", title_en="Note"),
]


def _pct(x: float | None) -> float | None:
    return None if x is None else _r(100.0 * x)


def _unit_note(u: UnitFigures) -> str:
    notes = []
    if u.unit_class is None or u.benchmark_g_kwh is None:
        notes.append(
            "not benchmarked: class not configured"
            if u.unit_class is None
            else f"not benchmarked: unknown class {u.unit_class}"
        )
    if u.budget_t is None:
        notes.append("no budget configured")
    if u.quarter_t is None:
        notes.append("no valid hour: totals unknown")
    if u.projection.reason_en:
        notes.append(f"no projection: {u.projection.reason_en}")
    if not u.aux_configured:
        notes.append(f"default aux power rate {u.aux_power_frac:.0%}")
    if u.data_from is not None:
        notes.append(
            f"data from {u.data_from:%Y-%m-%d %H:%M}: the year to date and the projection"
            " count from there"
        )
    return "; ".join(notes)


def _unit_row(u: UnitFigures) -> dict[str, Cell]:
    p = u.projection
    return {
        "unit": u.device_id,
        "plant": u.plant,
        "region": u.region,
        "class": u.unit_class if u.benchmark_g_kwh is not None else "not benchmarked",
        "quarter_t": _r(u.quarter_t),
        "substituted_h": u.substituted_h,
        "substituted_t": _r(u.substituted_t),
        "stopped_h": u.stopped_h,
        "completeness": _pct(u.completeness),
        "valid_days": f"{u.valid_days}/{u.days}",
        "valid_months": f"{u.valid_months}/{u.months}",
        "site_pressure_h": u.site_pressure_h,
        "gross_g_kwh": _r(u.gross_g_kwh),
        "net_g_kwh": _r(u.net_g_kwh),
        "aux": _r(100 * u.aux_power_frac),
        "benchmark_g_kwh": _r(u.benchmark_g_kwh),
        "intensity_ratio": _pct(u.intensity_ratio),
        "ytd_t": _r(u.ytd_t),
        "projected_t": _r(p.total_t),
        "projected_pm_t": _interval(p),
        "budget_t": _r(u.budget_t),
        "over_budget_t": _r(p.total_t - u.budget_t)
        if p.total_t is not None and u.budget_t is not None
        else None,
        "projected_ratio": _pct(_ratio(p.total_t, u.budget_t)),
        "level": u.level,
        "note": _unit_note(u) or None,
    }


def _group_row(g: PlantFigures) -> dict[str, Cell]:
    p = g.projection
    notes = []
    if g.budget_t is None:
        notes.append("no budget or target configured")
    if p.reason_en:
        notes.append(f"no projection: {p.reason_en}")
    if g.intensity_ratio is None:
        notes.append("not benchmarked")
    return {
        "name": g.key,
        "region": g.region,
        "units": len(g.units),
        "quarter_t": _r(g.quarter_t),
        "substituted_h": g.substituted_h,
        "completeness": _pct(g.completeness),
        "gross_g_kwh": _r(g.gross_g_kwh),
        "net_g_kwh": _r(g.net_g_kwh),
        "intensity_ratio": _pct(g.intensity_ratio),
        "ytd_t": _r(g.ytd_t),
        "projected_t": _r(p.total_t),
        "projected_pm_t": _interval(p),
        "budget_t": _r(g.budget_t),
        "over_budget_t": _r(p.total_t - g.budget_t)
        if p.total_t is not None and g.budget_t is not None
        else None,
        "projected_ratio": _pct(_ratio(p.total_t, g.budget_t)),
        "level": g.level,
        "note": "; ".join(notes) or None,
    }


def _unit_json(u: UnitFigures) -> dict[str, Any]:
    row: dict[str, Any] = dict(_unit_row(u))
    row.update(
        {
            "projection_method": u.projection.method,
            "projection_sigma_t": u.projection.sigma_t,
            "exceed_probability": u.projection.exceed_probability(u.budget_t)
            if u.budget_t is not None
            else None,
            "aux_configured": u.aux_configured,
            "valid_hours": u.valid_h,
            "expected_hours": u.expected_h,
            "stopped_hours": u.stopped_h,
            "monthly_t": u.monthly_t,
            "last_year_monthly_t": u.last_year_monthly_t,
            "reasons_en": u.judgement.reasons_en,
            "substituted_hours": [
                {
                    "start": r.start.isoformat(),
                    "hours": r.hours,
                    "rule": r.rule,
                    "t_per_h": r.t_per_h,
                }
                for r in u.runs
            ],
        }
    )
    return row


def _no_data_notes(a: CemsAnalysis) -> tuple[list[str], list[str]]:
    if a.data_end is None:
        return (
            [f"{a.quarter} 季度没有CEMS小时数据：不计算排放、强度和预测。"],
            [
                f"No CEMS hourly data in {a.quarter}:"
                " no totals, intensities or projections are given."
            ],
        )
    return [], []


def _intensity_figure(a: CemsAnalysis) -> Figure | None:
    ranked = sorted(
        (p for p in a.plants if p.intensity_ratio is not None),
        key=lambda p: p.intensity_ratio or 0.0,
    )
    if not ranked:
        return None
    fig = MplFigure(figsize=(7.5, 0.45 * len(ranked) + 1.5), dpi=_FIG_DPI)
    ax = fig.subplots()
    colours = {"green": "#3a9d5d", "yellow": "#e3c02b", "orange": "#e67e22", "red": "#c0392b"}
    ratios = [100 * (p.intensity_ratio or 0.0) for p in ranked]
    ax.barh([p.key for p in ranked], ratios, color=[colours[p.level] for p in ranked])
    ax.axvline(100.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel("net intensity / class benchmark (%)")
    ax.set_title(f"Plants ranked by intensity against benchmark, {a.quarter}")
    fig.tight_layout()
    return Figure(
        key="plants_intensity",
        title_zh="电厂供电排放强度与基准之比排序",
        title_en="Plants ranked by net intensity against benchmark",
        png=_png(fig),
    )


def _region_figure(a: CemsAnalysis) -> Figure | None:
    shown = [r for r in a.regions if r.ytd_t is not None or r.budget_t is not None]
    if not shown:
        return None
    fig = MplFigure(figsize=(7.0, 4.0), dpi=_FIG_DPI)
    ax = fig.subplots()
    x = np.arange(len(shown))
    ytd = [r.ytd_t or 0.0 for r in shown]
    rest = [
        (r.projection.total_t - (r.ytd_t or 0.0)) if r.projection.total_t is not None else 0.0
        for r in shown
    ]
    err = [r.projection.half_90_t or 0.0 for r in shown]
    ax.bar(x, ytd, color="#34495e", label="year to date")
    ax.bar(x, rest, bottom=ytd, color="#95a5a6", yerr=err, capsize=6, label="projected rest (90 %)")
    for i, r in enumerate(shown):
        if r.budget_t is not None:
            ax.hlines(
                r.budget_t,
                i - 0.4,
                i + 0.4,
                colors="#c0392b",
                linewidth=2,
                label="target" if i == 0 else "_nolegend_",
            )
    ax.set_xticks(x, [r.key for r in shown])
    ax.set_ylabel("t CO2")
    ax.set_title(f"Regional projection against target, {a.quarter.year}")
    ax.legend()
    fig.tight_layout()
    return Figure(
        key="regions_projection",
        title_zh="盟市全年排放预测与目标",
        title_en="Regional projection of the year against target",
        png=_png(fig),
    )


def _trend_figure(a: CemsAnalysis) -> Figure | None:
    """Monthly CO2 per region this year (solid, with substitutions) and last year (dashed,
    from each unit's monthly mean rate), the trend the warning comes from."""
    by_region: dict[str, list[UnitFigures]] = {}
    for u in a.units:
        by_region.setdefault(u.region or "unassigned", []).append(u)

    def total(units: list[UnitFigures], attr: str, m: int) -> float | None:
        vals = [getattr(u, attr)[m] for u in units]
        known = [v for v in vals if v is not None]
        return float(sum(known)) if known and len(known) == len(vals) else None

    series = {
        region: (
            [total(us, "monthly_t", m) for m in range(12)],
            [total(us, "last_year_monthly_t", m) for m in range(12)],
        )
        for region, us in sorted(by_region.items())
    }
    if not any(v is not None for this, _ in series.values() for v in this):
        return None
    fig = MplFigure(figsize=(7.0, 4.0), dpi=_FIG_DPI)
    ax = fig.subplots()
    months = np.arange(1, 13)
    for i, (region, (this, last)) in enumerate(series.items()):
        color = f"C{i % 10}"
        y = np.asarray([np.nan if v is None else v for v in this])
        ax.plot(months, y, "-o", color=color, label=f"{region} {a.quarter.year}")
        if any(v is not None for v in last):
            y0 = np.asarray([np.nan if v is None else v for v in last])
            ax.plot(months, y0, "--", color=color, label=f"{region} {a.quarter.year - 1}")
    ax.set_xticks(months)
    ax.set_xlabel("month")
    ax.set_ylabel("t CO2")
    ax.set_title(f"Monthly CO2 per region, {a.quarter.year} against {a.quarter.year - 1}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return Figure(
        key="regions_trend",
        title_zh="盟市月度排放趋势（与上年比较）",
        title_en="Monthly emissions per region against last year",
        png=_png(fig),
    )


def _method_notes() -> tuple[str, str]:
    return (
        "排放量按HJ 75-2017计算：有效小时≥45分钟有效数据，有效日≥20个有效小时，"
        "有效月≥25个有效日（2月≥23）；无效和缺失小时按HJ 75-2017 12.2维护期间和其他异常"
        "导致的数据缺失处理方法修约：季度有效数据捕集率≥90%时，连续缺失≤24小时取缺失前180个"
        "有效小时排放量最大值，>24小时取前720个有效小时最大值；75%~90%取前2160个有效小时"
        "最大值；<75%时标准未给出方法，本系统仍取前2160个有效小时最大值并单独标记。"
        "修约小时逐小时标记。",
        "Totals follow HJ 75-2017: a valid hour has >= 45 valid minutes, a valid day >= 20 valid"
        " hours, a valid month >= 25 valid days (>= 23 in February). Invalid and missing hours"
        " are substituted as HJ 75-2017 12.2 gives for data missing during maintenance and other"
        " abnormal periods: with a quarterly capture rate >= 90 %, a run of <= 24 h takes the"
        " maximum of the 180 valid hours before it, a longer run the maximum of the 720 before;"
        " at 75-90 % the maximum of the 2,160 before; below 75 % the standard gives no value and"
        " this system uses the 2,160-hour maximum too, marked capture_below_75. Every"
        " substituted hour is marked. Projection: year"
        " to date plus the rest of the year from last year's monthly shape scaled to this year,"
        " else the quarter's mean daily emission; 90 % interval from"
        " the quarter's daily series (autocorrelation-adjusted standard error).",
    )


def _warning_figures(src: UnitFigures | PlantFigures) -> dict[str, float | None]:
    """The figures stored with a unit's, plant's or region's warning (the quarterly dashboard
    and the alert read these keys): the budget (a region's target), emitted so far, its use,
    the projection with its 90 % range, the intensity against benchmark, valid-hour share and
    the quarter's substituted hours."""
    p = src.projection
    half = p.half_90_t if p.total_t is not None else None
    budget, ytd = src.budget_t, src.ytd_t
    return {
        "budget_t": budget,
        "ytd_t": ytd,
        "budget_use_pct": 100 * ytd / budget if budget and ytd is not None else None,
        "projection_t": p.total_t,
        "projection_low_t": p.total_t - half if p.total_t is not None and half else p.total_t,
        "projection_high_t": p.total_t + half if p.total_t is not None and half else p.total_t,
        "intensity_ratio": src.intensity_ratio,
        "valid_share": src.completeness,
        "substituted_h": float(src.substituted_h),
    }


def _warning(source_type: str, source_id: str, src: UnitFigures | PlantFigures) -> SourceWarning:
    """A unit's, plant's or region's warning: its level, reasons and the figures behind them."""
    return SourceWarning(
        source_type=source_type,
        source_id=source_id,
        region=src.region if source_type != "region" else source_id,
        level=src.level,
        reasons_zh=src.judgement.reasons_zh,
        reasons_en=src.judgement.reasons_en,
        figures=_warning_figures(src),
    )


async def plants_section(ctx: SectionContext) -> Section:
    """Units and plants: quarter and year-to-date CO2, intensity, projection, levels.

    Args:
        ctx: the section context.

    Returns:
        The section (tables, the intensity ranking figure, warnings, notes, JSON data).
    """
    a = await analyse(ctx)
    zh, en = _no_data_notes(a)
    mzh, men = _method_notes()
    zh.append(mzh)
    en.append(men)
    not_bench = [u.device_id for u in a.units if u.benchmark_g_kwh is None]
    if not_bench:
        zh.append(f"未配置机组类型、未与基准比较的机组：{', '.join(not_bench)}")
        en.append(f"Not benchmarked (class not configured): {', '.join(not_bench)}")
    no_budget = [u.device_id for u in a.units if u.budget_t is None]
    if no_budget:
        zh.append(f"未配置年度预算的机组：{', '.join(no_budget)}")
        en.append(f"No annual budget configured: {', '.join(no_budget)}")
    runs_rows: list[dict[str, Cell]] = [
        {
            "unit": u.device_id,
            "start": r.start.isoformat(),
            "hours": r.hours,
            "rule": r.rule,
            "t_per_h": _r(r.t_per_h, 3),
        }
        for u in a.units
        for r in u.runs
    ]
    tables = [
        Table(
            key="cems_units",
            title_zh="机组排放与预警",
            title_en="CEMS units: emissions and warnings",
            columns=_UNIT_COLUMNS,
            rows=[_unit_row(u) for u in a.units],
        ),
        Table(
            key="cems_plants",
            title_zh="电厂排放与预警",
            title_en="Plants: emissions and warnings",
            columns=_PLANT_COLUMNS,
            rows=[_group_row(p) for p in a.plants],
        ),
        Table(
            key="cems_substituted",
            title_zh="补值小时",
            title_en="Substituted hours",
            columns=[
                Column(key="unit", title_zh="机组", title_en="Unit"),
                Column(key="start", title_zh="开始", title_en="Start"),
                Column(key="hours", title_zh="小时数", title_en="Hours", unit="h"),
                Column(key="rule", title_zh="规则", title_en="Rule"),
                Column(key="t_per_h", title_zh="修约值", title_en="Substituted value", unit="t/h"),
            ],
            rows=runs_rows,
            note_en="HJ 75-2017 12.2. short: capture >= 90 %, run <= 24 h, maximum of the 180"
            " valid hours before; long: capture >= 90 %, longer run, maximum of the 720 before;"
            " capture_75_90: maximum of the 2,160 before; capture_below_75: no value in the"
            " standard, the 2,160-hour maximum used",
            note_zh="HJ 75-2017 12.2。short：捕集率≥90%、连续≤24小时，前180个有效小时最大值；"
            "long：捕集率≥90%、>24小时，前720个有效小时最大值；capture_75_90：前2160个有效小时"
            "最大值；capture_below_75：标准未给出方法，取前2160个有效小时最大值",
        ),
    ]
    figures = [f for f in [_intensity_figure(a)] if f is not None]
    warnings = [_warning("unit", u.device_id, u) for u in a.units] + [
        _warning("plant", p.key, p) for p in a.plants
    ]
    return Section(
        key="plants",
        title_zh="电厂与机组",
        title_en="Power plants and units",
        tables=tables,
        figures=figures,
        warnings=warnings,
        notes_zh=zh,
        notes_en=en,
        data={
            "data_end": a.data_end.isoformat() if a.data_end else None,
            "units": [_unit_json(u) for u in a.units],
            "plants": [_group_row(p) | {"units_list": p.units} for p in a.plants],
        },
    )


async def regions_section(ctx: SectionContext) -> Section:
    """Regions (league/city): the CEMS units' sum against the region's target.

    Args:
        ctx: the section context.

    Returns:
        The section (the regional table and projection figure, warnings, notes, JSON data).
    """
    a = await analyse(ctx)
    zh, en = _no_data_notes(a)
    if a.unassigned_plants:
        zh.append(f"未配置所属盟市的电厂（不计入地区合计）：{', '.join(a.unassigned_plants)}")
        en.append(
            "Plants with no region configured (left out of the regional sums): "
            + ", ".join(a.unassigned_plants)
        )
    limit = ctx.settings.targets.projection_orange_ratio
    lagging = [
        r.key for r in a.regions if (_ratio(r.projection.total_t, r.budget_t) or 0.0) >= limit
    ]
    unmeasured = [r.key for r in a.regions if not r.units]
    if unmeasured:
        zh.append(f"有目标但没有CEMS机组的地区：{', '.join(unmeasured)}")
        en.append(f"Regions with a target but no CEMS unit assigned: {', '.join(unmeasured)}")
    if lagging:
        zh.append(f"预计未完成目标的地区：{', '.join(lagging)}")
        en.append(f"Regions lagging behind their target: {', '.join(lagging)}")
    figures = [f for f in [_trend_figure(a), _region_figure(a)] if f is not None]
    return Section(
        key="regions",
        title_zh="盟市排放与目标",
        title_en="Regions against their targets",
        tables=[
            Table(
                key="cems_regions",
                title_zh="盟市合计",
                title_en="Regional totals (CEMS units)",
                columns=_PLANT_COLUMNS,
                rows=[_group_row(r) for r in a.regions],
            ),
        ],
        figures=figures,
        warnings=[_warning("region", r.key, r) for r in a.regions],
        notes_zh=zh,
        notes_en=en,
        data={"regions": [_group_row(r) | {"units_list": r.units} for r in a.regions]},
    )
