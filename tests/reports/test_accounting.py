"""HJ 75-2017 accounting of one unit's hours, the projection and the warning rules (pure)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings, TargetsSettings, load_settings
from reports.accounting import (
    RULE_LONG,
    RULE_SHORT,
    account_hours,
    month_is_valid,
    project_year,
    valid_days,
)
from reports.targets import benchmark_g_co2_kwh, judge, plant_of


def _hours(pattern: str, values: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """'v' valid, '.' invalid or missing; values default to 10, 20, 30, ... per hour."""
    valid = np.asarray([c == "v" for c in pattern])
    rate = np.asarray(
        values if values is not None else [10.0 * (i + 1) for i in range(len(pattern))]
    )
    return valid, rate


def test_a_short_run_gets_the_mean_of_the_valid_hours_either_side() -> None:
    """Hours 2-3 missing between 20 and 50 t/h: each is substituted with 35, marked short."""
    valid, rate = _hours("vv..vv")
    out = account_hours(valid, rate)
    assert out.emission_t.tolist() == [10.0, 20.0, 35.0, 35.0, 50.0, 60.0]
    assert out.substituted.tolist() == [False, False, True, True, False, False]
    assert out.rule.tolist() == [0, 0, RULE_SHORT, RULE_SHORT, 0, 0]


def test_a_run_at_the_edge_uses_the_one_side_there_is() -> None:
    """Missing first and last hours take the nearest valid hour."""
    valid, rate = _hours(".vv.")
    out = account_hours(valid, rate)
    assert out.emission_t.tolist() == [20.0, 20.0, 30.0, 30.0]


def test_a_long_run_gets_the_mean_of_the_lookback_valid_hours_before() -> None:
    """A run longer than 24 h: the mean of the last 720 (here 3) valid hours before it."""
    valid, rate = _hours("vvvvv" + "." * 25 + "v")
    out = account_hours(valid, rate, lookback_h=3)
    assert out.emission_t[5:30].tolist() == [40.0] * 25  # mean of 30, 40, 50
    assert set(out.rule[5:30].tolist()) == {RULE_LONG}
    # with none before, the first valid hours after it
    valid, rate = _hours("." * 30 + "vvv")
    out = account_hours(valid, rate, lookback_h=720)
    assert out.emission_t[:30].tolist() == [320.0] * 30  # mean of 310, 320, 330


def test_a_run_of_exactly_the_short_limit_is_short_and_one_more_is_long() -> None:
    """24 h is filled from its neighbours, 25 h from the lookback mean (HJ 75-2017)."""
    for gap, rule in ((24, RULE_SHORT), (25, RULE_LONG)):
        valid, rate = _hours("vv" + "." * gap + "v")
        assert account_hours(valid, rate).rule[2] == rule


def test_a_unit_without_any_valid_hour_gets_nothing_substituted() -> None:
    """No valid hour at all: the totals are unknown (NaN), never zero or invented."""
    valid, rate = _hours("....")
    out = account_hours(valid, rate)
    assert np.isnan(out.emission_t).all()
    assert not out.substituted.any()


def test_invalid_hours_ignore_their_stored_value() -> None:
    """An invalid hour's own value (fewer than 45 minutes) is not used."""
    valid, rate = _hours("v.v", [10.0, 999.0, 30.0])
    assert account_hours(valid, rate).emission_t.tolist() == [10.0, 20.0, 30.0]


def test_valid_day_needs_20_valid_hours_and_valid_month_25_days_23_in_february() -> None:
    """HJ 75-2017: day >= 20 valid hours; month >= 25 valid days, February >= 23."""
    valid = np.zeros(48, bool)
    valid[:20] = True  # day 0: 20 valid hours
    valid[24:43] = True  # day 1: 19
    counts, ok = valid_days(valid, np.repeat(np.arange(2), 24), 2)
    assert counts.tolist() == [20, 19]
    assert ok.tolist() == [True, False]
    assert month_is_valid(25, 7)
    assert not month_is_valid(24, 7)
    assert month_is_valid(23, 2)
    assert not month_is_valid(22, 2)


def test_projection_from_the_daily_mean_with_its_autocorrelation_adjusted_error() -> None:
    """Rest = mean daily x days left; sigma = rest x s / (mean sqrt(n (1-r1)/(1+r1)))."""
    rng = np.random.default_rng(3)
    daily = 1000 + rng.normal(0, 50, 60)
    p = project_year(50_000.0, daily, 100.0, min_days=14)
    rest = daily.mean() * 100.0
    d = daily - daily.mean()
    r1 = min(max(float((d[1:] * d[:-1]).sum() / (d * d).sum()), 0.0), 0.95)
    n_eff = 60 * (1 - r1) / (1 + r1)
    assert p.method == "daily_mean"
    assert p.total_t == pytest.approx(50_000.0 + rest)
    assert p.sigma_t == pytest.approx(rest * daily.std(ddof=1) / (daily.mean() * math.sqrt(n_eff)))
    # probability of exceeding a budget at the projection: one half
    assert p.exceed_probability(p.total_t or 0.0) == pytest.approx(0.5)


def test_projection_with_last_years_shape_scales_its_rest() -> None:
    """Seasonal: rest = ytd / last year's same period x last year's rest."""
    p = project_year(
        1_100.0, np.full(30, 10.0), 90.0, min_days=14,
        last_year_same_period_t=1_000.0, last_year_rest_t=400.0,
    )  # fmt: skip
    assert p.method == "seasonal"
    assert p.total_t == pytest.approx(1_100.0 + 1.1 * 400.0)


def test_projection_with_too_few_days_is_refused_in_words() -> None:
    """Fewer days than required: no total, a reason."""
    p = project_year(100.0, np.full(5, 10.0), 200.0, min_days=14)
    assert p.total_t is None
    assert p.reason_en == "only 5 days with data in the quarter, a projection needs 14"
    assert project_year(100.0, np.zeros(0), 0.0, min_days=14).method == "complete"


def test_levels_follow_the_configured_rules() -> None:
    """Projection ratio, intensity ratio and completeness, the worst deciding."""
    s = Settings()
    assert judge(s, projected_ratio=0.9, intensity_ratio=0.9, completeness=0.99).level == "green"
    assert judge(s, projected_ratio=0.96, intensity_ratio=None, completeness=None).level == "yellow"
    assert judge(s, projected_ratio=1.02, intensity_ratio=None, completeness=None).level == "orange"
    assert judge(s, projected_ratio=1.10, intensity_ratio=None, completeness=None).level == "red"
    assert judge(s, projected_ratio=None, intensity_ratio=1.06, completeness=None).level == "orange"
    assert judge(s, projected_ratio=None, intensity_ratio=None, completeness=0.85).level == "yellow"
    # 0.6 < 0.75 x 0.90: at least orange
    j = judge(s, projected_ratio=0.5, intensity_ratio=None, completeness=0.6)
    assert j.level == "orange"
    assert j.reasons_en == ["valid data 60% (required 90%)"]
    strict = Settings(targets=TargetsSettings(projection_red_ratio=1.0))
    assert (
        judge(strict, projected_ratio=1.0, intensity_ratio=None, completeness=None).level == "red"
    )


def test_targets_settings_refuse_thresholds_out_of_order_and_fractions_over_one() -> None:
    """Ratios must rise yellow < orange < red; completeness requirements are fractions."""
    with pytest.raises(ValueError, match="ratios must rise"):
        TargetsSettings(projection_yellow_ratio=1.2)
    with pytest.raises(ValueError, match="fractions 0-1"):
        TargetsSettings(completeness_required={"cems": 90.0})


def test_benchmark_is_supply_coal_times_the_stated_factor_and_unknown_class_is_none() -> None:
    """300 g sce/kWh x 2.66 t CO2/t sce = 798 g CO2/kWh; no class or unknown: None."""
    s = Settings()
    assert benchmark_g_co2_kwh(s, "600mw_sc") == pytest.approx(798.0)
    assert benchmark_g_co2_kwh(s, None) is None
    assert benchmark_g_co2_kwh(s, "steam_engine") is None
    assert plant_of("beifang-power/baotou-plant/unit-1") == "beifang-power/baotou-plant"


def test_the_readme_baotou_ordos_targets_example_loads(repo_root: Path, tmp_path: Path) -> None:
    """The README's targets example (second TOML block) is a valid configuration as written."""
    readme = (repo_root / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if "[targets]" in b
    )
    config = tmp_path / "targets.toml"
    config.write_text(block)
    s = load_settings(config)
    assert s.targets.plant_region["yimeng-power/dalate-plant"] == "Ordos"
    assert set(s.targets.region_target_t) == {"Baotou", "Ordos"}
    site = s.detection.cems_site("yimeng-power/dalate-plant/unit-3")
    assert site.co2_basis == "wet"
    assert benchmark_g_co2_kwh(s, "600mw_sc") == pytest.approx(798.0)
