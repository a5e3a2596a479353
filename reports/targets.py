"""Budgets, targets and warning levels of CEMS units, plants and regions (pure, no I/O).

The figures come from ``settings.targets`` (:class:`core.settings.TargetsSettings`) and the
benchmarks from ``settings.detection`` (the plan's box 3 supply coal consumption per unit
class, g standard coal per kWh supplied, times ``co2_t_per_t_sce`` t CO2 per t standard coal:
2.66 by default, so 300 g sce/kWh is 798 g CO2/kWh). The warning rules, the worst deciding:

1. projected year total / budget (or target) >= ``projection_red_ratio`` (1.10): red;
   >= ``projection_orange_ratio`` (1.00): orange; >= ``projection_yellow_ratio`` (0.95):
   yellow;
2. the quarter's net intensity / benchmark >= ``intensity_orange_ratio`` (1.05): orange;
   >= ``intensity_yellow_ratio`` (1.00): yellow;
3. valid-hour completeness below ``completeness_required["cems"]`` (0.90): at least yellow;
   below ``completeness_orange_frac`` (0.75) of it: at least orange.

A source without a budget, a benchmark or a projection is judged on the rules that apply,
and the reasons say which could not be applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.settings import Settings, TargetsSettings
from reports.accounting import SubstitutionLimits
from reports.model import Level, worst_level
from reports.rules import required_share

__all__ = [
    "Judgement",
    "benchmark_g_co2_kwh",
    "judge",
    "plant_of",
    "region_of",
    "substitution_limits",
]


def substitution_limits(t: TargetsSettings) -> SubstitutionLimits:
    """The HJ 75-2017 substitution table's limits as configured."""
    return SubstitutionLimits(
        short_run_h=t.substitution_short_gap_h,
        short_lookback_h=t.substitution_short_lookback_h,
        long_lookback_h=t.substitution_lookback_h,
        low_capture_lookback_h=t.substitution_low_capture_lookback_h,
        full_capture=t.substitution_full_capture,
        low_capture=t.substitution_low_capture,
    )


def plant_of(device_id: str) -> str:
    """The plant of a CEMS unit: ``company/plant`` of ``company/plant/unit``."""
    parts = device_id.split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else device_id


def region_of(settings: Settings, plant: str) -> str | None:
    """The region (league/city) a plant is assigned to, None when not configured."""
    return settings.targets.plant_region.get(plant)


def benchmark_g_co2_kwh(settings: Settings, unit_class: str | None) -> float | None:
    """The class benchmark in g CO2 per kWh supplied, None for an unknown or missing class."""
    if unit_class is None:
        return None
    sce = settings.detection.cems_benchmarks_g_sce_kwh.get(unit_class)
    return None if sce is None else sce * settings.detection.co2_t_per_t_sce


@dataclass(slots=True)
class Judgement:
    """A level with its reasons in both languages."""

    level: Level = "green"
    reasons_zh: list[str] = field(default_factory=list)
    reasons_en: list[str] = field(default_factory=list)

    def raise_to(self, level: Level, zh: str, en: str) -> None:
        self.level = worst_level([self.level, level])
        self.reasons_zh.append(zh)
        self.reasons_en.append(en)


def judge(
    settings: Settings,
    *,
    projected_ratio: float | None,
    intensity_ratio: float | None,
    completeness: float | None,
    source_id: str = "",
    what_en: str = "budget",
    what_zh: str = "预算",
) -> Judgement:
    """The warning level of a unit, plant or region from its figures.

    Args:
        settings: the settings (``targets`` rules).
        projected_ratio: projected year total over the budget or target (None: unknown).
        intensity_ratio: net intensity over the benchmark (None: not benchmarked).
        completeness: valid hours over expected hours in the quarter (None: not judged).
        source_id: the unit, plant or region, whose own ``completeness_required`` (or its
            plant's) wins over the ``cems`` one.
        what_en: ``budget`` for units and plants, ``target`` for regions.
        what_zh: the same in Chinese.

    Returns:
        The level and its reasons.
    """
    t = settings.targets
    j = Judgement()
    if projected_ratio is not None:
        pct = f"{projected_ratio:.0%}"
        if projected_ratio >= t.projection_red_ratio:
            j.raise_to(
                "red", f"预计全年排放为{what_zh}的{pct}", f"projected year at {pct} of {what_en}"
            )
        elif projected_ratio >= t.projection_orange_ratio:
            j.raise_to(
                "orange", f"预计全年排放为{what_zh}的{pct}", f"projected year at {pct} of {what_en}"
            )
        elif projected_ratio >= t.projection_yellow_ratio:
            j.raise_to(
                "yellow",
                f"预计全年排放接近{what_zh}（{pct}）",
                f"projected year near {what_en} ({pct})",
            )
    if intensity_ratio is not None:
        pct = f"{intensity_ratio:.0%}"
        if intensity_ratio >= t.intensity_orange_ratio:
            j.raise_to(
                "orange", f"供电排放强度为基准的{pct}", f"net intensity at {pct} of benchmark"
            )
        elif intensity_ratio >= t.intensity_yellow_ratio:
            j.raise_to(
                "yellow", f"供电排放强度达到基准（{pct}）", f"net intensity at benchmark ({pct})"
            )
    if completeness is not None:
        need = required_share(t.completeness_required, "cems", source_id)
        need = 0.9 if need is None else need
        pct = f"{completeness:.0%}"
        if completeness < need * t.completeness_orange_frac:
            j.raise_to(
                "orange",
                f"有效数据率仅{pct}（要求{need:.0%}）",
                f"valid data {pct} (required {need:.0%})",
            )
        elif completeness < need:
            j.raise_to(
                "yellow", f"有效数据率{pct}低于要求{need:.0%}", f"valid data {pct} below {need:.0%}"
            )
    return j
