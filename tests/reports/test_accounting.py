"""HJ 75-2017 accounting of one unit's hours, the projection and the warning rules (pure)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings, TargetsSettings, load_settings
from reports.accounting import (
    RULE_BELOW_TABLE,
    RULE_LONG,
    RULE_LOW_CAPTURE,
    RULE_SHORT,
    SubstitutionLimits,
    _range_max,
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


def test_a_short_run_at_full_capture_gets_the_maximum_of_the_180_valid_hours_before() -> None:
    """HJ 75-2017 12.2, capture >= 90 %, run <= 24 h: the maximum of the 180 valid hours before
    the run, not the mean of its neighbours (HJ/T 75-2007's older rule)."""
    values = [50.0, 10.0] + [20.0] * 200 + [0.0, 0.0] + [30.0] * 20
    valid = np.ones(len(values), bool)
    valid[202:204] = False  # two hours missing: capture 222/224 > 90 %
    out = account_hours(valid, np.asarray(values))
    # the 180 valid hours before are the 20s (the 50 lies 202 valid hours back)
    assert out.emission_t[202:204].tolist() == [20.0, 20.0]
    assert out.rule[202:204].tolist() == [RULE_SHORT, RULE_SHORT]
    assert out.substituted.tolist() == (~valid).tolist()
    values[150] = 45.0  # within the 180: it is the maximum now
    out = account_hours(valid, np.asarray(values))
    assert out.emission_t[202:204].tolist() == [45.0, 45.0]


def test_a_long_run_at_full_capture_gets_the_maximum_of_the_720_valid_hours_before() -> None:
    """Capture >= 90 %, a run longer than 24 h: the maximum of the 720 valid hours before."""
    values = np.full(1000, 10.0)
    values[100] = 99.0  # 869 valid hours before the run: outside the 720
    values[300] = 60.0  # inside the 720 but outside the 180
    valid = np.ones(1000, bool)
    valid[970:995] = False  # 25 h: the long case; capture 975/1000
    out = account_hours(valid, values)
    assert set(out.emission_t[970:995].tolist()) == {60.0}
    assert set(out.rule[970:995].tolist()) == {RULE_LONG}


def test_a_run_of_exactly_the_short_limit_is_short_and_one_more_is_long() -> None:
    """24 h is the short case, 25 h the long one (HJ 75-2017: N <= 24 h)."""
    for gap, rule in ((24, RULE_SHORT), (25, RULE_LONG)):
        valid = np.ones(600, bool)
        valid[500 : 500 + gap] = False
        assert account_hours(valid, np.full(600, 5.0)).rule[500] == rule


def test_capture_between_75_and_90_percent_takes_the_2160_hour_maximum() -> None:
    """75 % <= capture < 90 %: the maximum of the 2,160 valid hours before, any run length."""
    values = np.full(3000, 10.0)
    values[200] = 70.0
    values[600] = 40.0
    valid = np.ones(3000, bool)
    valid[2900:2990] = False  # 90 h
    valid[2995] = False  # 1 h: capture 2909/3000 = 97 %
    out = account_hours(valid, values)
    assert out.rule[2950] == RULE_LONG
    assert out.rule[2995] == RULE_SHORT
    assert out.emission_t[2950] == 10.0  # the 70 and the 40 lie beyond the 720
    valid[1000:1300] = False  # capture 2609/3000 = 87 %
    out = account_hours(valid, values)
    assert abs(out.capture[0] - 2609 / 3000) < 1e-12
    assert set(out.rule[~valid].tolist()) == {RULE_LOW_CAPTURE}
    assert out.emission_t[1100] == 70.0  # all 1,000 valid hours before it
    # 2,600 valid hours before the 90 h run: the 2,160 reach back to hour 440, past the 70
    assert out.emission_t[2950] == 40.0


def test_below_75_percent_capture_the_hours_are_marked_outside_the_table() -> None:
    """Below 75 % the standard gives no value: the 2,160-hour maximum, marked as such."""
    valid, rate = _hours("vv..vv")  # 4 of 6
    out = account_hours(valid, rate)
    assert out.rule.tolist() == [0, 0, RULE_BELOW_TABLE, RULE_BELOW_TABLE, 0, 0]
    assert out.emission_t.tolist() == [10.0, 20.0, 20.0, 20.0, 50.0, 60.0]


def test_the_capture_rate_is_each_hours_own_quarter() -> None:
    """A run in a quarter with poor capture takes the 2,160 rule; one in a full quarter the
    180/720 rules, though both units' series are one array."""
    values = np.arange(1.0, 401.0)
    valid = np.ones(400, bool)
    valid[100] = False  # quarter 0 (hours 0-199): 199/200
    valid[250:300] = False  # quarter 1 (200-399): 150/200 = 75 %: the 2,160 rule
    quarter = np.repeat(np.asarray([7, 8]), 200)
    out = account_hours(valid, values, quarter, SubstitutionLimits())
    assert out.rule[100] == RULE_SHORT
    assert out.emission_t[100] == 100.0  # the maximum of the valid hours before: hour 99
    assert set(out.rule[250:300].tolist()) == {RULE_LOW_CAPTURE}
    assert out.capture[0] == 199 / 200
    assert out.capture[399] == 150 / 200


def test_a_run_at_the_start_of_the_data_looks_forward_instead() -> None:
    """With no valid hour before it, the same number of valid hours after it."""
    valid = np.ones(300, bool)
    valid[:10] = False
    values = np.full(300, 3.0)
    values[150] = 8.0  # within the 180 after
    values[250] = 9.0  # outside them
    out = account_hours(valid, values)
    assert out.emission_t[:10].tolist() == [8.0] * 10


def test_a_unit_without_any_valid_hour_gets_nothing_substituted() -> None:
    """No valid hour at all: the totals are unknown (NaN), never zero or invented."""
    valid, rate = _hours("....")
    out = account_hours(valid, rate)
    assert np.isnan(out.emission_t).all()
    assert not out.substituted.any()


def test_invalid_hours_ignore_their_stored_value() -> None:
    """An invalid hour's own value (fewer than 45 minutes) is not used."""
    valid, rate = _hours("v.v", [10.0, 999.0, 30.0])
    assert account_hours(valid, rate).emission_t.tolist() == [10.0, 10.0, 30.0]


def test_the_range_maximum_matches_a_loop() -> None:
    """The sparse-table maximum over many windows equals max() over each slice."""
    rng = np.random.default_rng(7)
    vals = rng.normal(size=5000)
    lo = rng.integers(0, 5000, 400)
    hi = np.minimum(lo + rng.integers(1, 3000, 400), 5000)
    got = _range_max(vals, lo, hi)
    assert got.tolist() == [float(vals[a:b].max()) for a, b in zip(lo, hi, strict=True)]


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
