"""The quarterly report over five simulated quarters: figures equal independent computations,
levels follow the rules, plots exist, the HTML is self-contained, no-data says so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from core.settings import DbSettings, Settings
from processors.storage import migrate
from reports import Quarter, Report, build_report
from reports.render import render_html, render_json
from tests.reports import cems_sim
from tests.reports import report_sim as simdata
from tests.reports.report_sim import BUERTAI, CEMS, HADAMEN, LEAK, STATIONS, Q

REPORT_SETTINGS = {"city_baseline_ppm": {"baotou": 9.0}, "mine_allowed_exceedance_h": {
    "ordos-coal/buertai": 2.0}}  # fmt: skip


@pytest.fixture
async def sim_db(pg_url: str) -> tuple[str, simdata.Sim]:
    """A migrated database holding the five simulated quarters."""
    await migrate(pg_url, DbSettings())  # TimescaleDB where the server has it
    sim = simdata.build()
    conn = await asyncpg.connect(pg_url)
    try:
        await simdata.write(conn, sim)
    finally:
        await conn.close()
    return pg_url, sim


@pytest.fixture
def report_settings(settings_factory: Callable[..., Settings], tmp_path: Path) -> Settings:
    return settings_factory(reports={"out_dir": str(tmp_path / "out")}, targets=REPORT_SETTINGS)


async def _report(url: str, settings: Settings, quarter: Quarter = Q) -> Report:
    conn = await asyncpg.connect(url)
    try:
        return await build_report(conn, settings, quarter)
    finally:
        await conn.close()


def _section(report: Report, key: str) -> Any:
    return next(s for s in report.sections if s.key == key)


def _level(report: Report, source: str) -> str:
    return report.levels()[source]


async def test_city_means_and_changes_equal_numpy_over_the_raw_points(
    sim_db: tuple[str, simdata.Sim], report_settings: Settings
) -> None:
    """Mean enhancement, quarter-on-quarter and year-on-year equal numpy over the valid
    derived points; rising Baotou is red (100 % up on the year), flat Ordos green."""
    url, sim = sim_db
    report = await _report(url, report_settings)
    cities = _section(report, "cities").data["cities"]
    for city in STATIONS:
        truth = sim.city_mean[city]
        got = cities[city]
        assert got["mean_ppm"] == pytest.approx(truth[Q], rel=1e-9)
        assert got["prev_ppm"] == pytest.approx(truth[Q.previous()], rel=1e-9)
        assert got["year_ago_ppm"] == pytest.approx(truth[Q.year_ago()], rel=1e-9)
        assert got["qoq_pct"] == pytest.approx(
            (truth[Q] - truth[Q.previous()]) / truth[Q.previous()] * 100, rel=1e-9
        )
        assert got["yoy_pct"] == pytest.approx(
            (truth[Q] - truth[Q.year_ago()]) / truth[Q.year_ago()] * 100, rel=1e-9
        )
    assert cities["baotou"]["yoy_pct"] > 90
    assert _level(report, "city:baotou") == "red"
    assert _level(report, "city:ordos") == "green"
    baotou = next(w for w in report.warnings if w.source_id == "baotou")
    assert any("year on year" in r for r in baotou.reasons_en)
    assert any("above the baseline of 9.0 ppm" in r for r in baotou.reasons_en)
    assert any("同比" in r for r in baotou.reasons_zh)


async def test_mine_figures_equal_independent_computations(
    sim_db: tuple[str, simdata.Sim], report_settings: Settings
) -> None:
    """Exceedance hours clipped to the quarter, releases in the quarter, median time to
    acknowledge and silent-sensor hours equal the test's own computation from what was
    written; buertai is orange (3.5 h beyond its 2 h, 4 releases, median ack 40 min)."""
    url, sim = sim_db
    report = await _report(url, report_settings)
    sites = _section(report, "mines").data["sites"]
    b = sites["ordos-coal/buertai"]
    assert b["exceedances"] == 3
    assert b["exceedance_h"] == pytest.approx(simdata.alarm_hours_in_quarter(sim.alarms))
    assert b["exceedance_h"] == pytest.approx(5.5)
    assert b["power_cuts"] == 1
    assert b["releases"] == 4
    assert b["alerts"] == 4
    assert b["unacknowledged"] == 1
    assert b["ack_median_min"] == pytest.approx(float(np.median(simdata.ACK_MINUTES)))
    assert b["ack_max_min"] == pytest.approx(50.0)
    assert b["silent_h"] == simdata.hours_truth(sim, BUERTAI)[2] == 0
    h = sites["baotou-coal/hadamen"]
    assert h["silent_h"] == simdata.hours_truth(sim, HADAMEN)[2] > 1000
    assert h["exceedances"] == 0
    assert _level(report, "mine:ordos-coal/buertai") == "orange"
    assert sites["changqing/sulige"]["releases"] == 1
    assert _level(report, "leak_site:changqing/sulige") == "yellow"


async def test_completeness_equals_hours_counted_from_the_raw_rows(
    sim_db: tuple[str, simdata.Sim], report_settings: Settings
) -> None:
    """Valid-hour shares per source equal hours counted from the raw readings; the mine with
    poor data and the CEMS unit with two days of data are red, the silent city station
    yellow, the complete mine green."""
    url, sim = sim_db
    report = await _report(url, report_settings)
    by = _section(report, "completeness").data["by_source"]
    for key, devices in [
        ("mine:baotou-coal/hadamen", HADAMEN),
        ("mine:ordos-coal/buertai", BUERTAI),
        ("device:ordos/dongsheng/pic-04", ["ordos/dongsheng/pic-04"]),
    ]:
        expected, valid, silent = simdata.hours_truth(sim, devices)
        assert by[key]["expected_h"] == expected, key
        assert by[key]["valid_h"] == valid, key
        assert by[key]["silent_h"] == silent, key
        assert by[key]["valid_share"] == pytest.approx(valid / expected), key
    # CEMS: an hour needs 45 valid minute values (HJ 75): 48 hours sent, two with 30 minutes
    assert by[f"unit:{CEMS}"]["valid_h"] == 46
    assert _level(report, "mine:baotou-coal/hadamen") == "red"
    assert _level(report, f"unit:{CEMS}") == "red"
    assert _level(report, "device:ordos/dongsheng/pic-04") == "yellow"
    assert by["mine:ordos-coal/buertai"]["level"] == "green"
    assert by[f"leak_site:{LEAK.rsplit('/', 1)[0]}"]["level"] == "green"
    hadamen = next(w for w in report.warnings if w.source_id == "baotou-coal/hadamen")
    assert any("below the required 95%" in r for r in hadamen.reasons_en)


async def test_a_source_of_its_own_requirement_changes_its_level_others_keep_their_kinds(
    sim_db: tuple[str, simdata.Sim], settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """``completeness_required`` per source: the most specific key wins (the device id, then
    its site or plant, then its kind; kinds not given keep their defaults). The silent city
    station (about 67 %) is yellow against the city's 75 % but green against its own 60 %,
    beside a station of its site keeping the site's; Hadamen's own 0 % turns it from red to
    green while Buertai keeps the mine kind's 95 %; the CEMS unit with two days of data takes
    its plant's requirement."""
    url, _sim = sim_db
    own = {
        "city": 0.75,
        "ordos/kangbashi": 0.70,  # a site: its stations unless they have their own
        "ordos/dongsheng": 0.99,
        "ordos/dongsheng/pic-04": 0.60,  # the device beats its site and kind
        "baotou-coal/hadamen": 0.0,  # a mine site, the source the section reports by
        "beifang/dalate": 0.0,  # a plant: its units
    }
    s = settings_factory(
        reports={"out_dir": str(tmp_path / "out")},
        targets=REPORT_SETTINGS | {"completeness_required": own},
    )
    assert s.targets.completeness_required["mine"] == 0.95  # a kind left out: its default
    by = _section(await _report(url, s), "completeness").data["by_source"]
    pic04 = by["device:ordos/dongsheng/pic-04"]
    assert 0.60 < pic04["valid_share"] < 0.75
    assert (pic04["required_share"], pic04["level"]) == (0.60, "green")
    assert by["device:ordos/kangbashi/pic-03"]["required_share"] == 0.70
    assert by["device:baotou/kundulun/pic-01"]["required_share"] == 0.75  # the kind's
    assert (by["mine:baotou-coal/hadamen"]["required_share"], by["mine:baotou-coal/hadamen"][
        "level"]) == (0.0, "green")  # fmt: skip
    assert by["mine:ordos-coal/buertai"]["required_share"] == 0.95
    assert (by[f"unit:{CEMS}"]["required_share"], by[f"unit:{CEMS}"]["level"]) == (0.0, "green")
    # the same data with the kinds' requirements only: the levels the own ones changed
    base = settings_factory(reports={"out_dir": str(tmp_path / "b")}, targets=REPORT_SETTINGS)
    by = _section(await _report(url, base), "completeness").data["by_source"]
    assert by["device:ordos/dongsheng/pic-04"]["level"] == "yellow"
    assert by["mine:baotou-coal/hadamen"]["level"] == "red"
    assert by[f"unit:{CEMS}"]["level"] == "red"


@pytest.mark.parametrize(
    ("required", "message"),
    [
        ({"cems": 90.0}, "fractions 0-1"),
        ({"ordos/dongsheng/pic-04": -0.1}, "fractions 0-1"),
        ({"Mine": 0.9}, "neither a source kind"),
        ({"ordos": 0.9}, "neither a source kind"),  # a network alone is no source
        ({"ordos/dongsheng/pic-04/x": 0.9}, "neither a source kind"),
        ({"Ordos/Dongsheng": 0.9}, "neither a source kind"),
    ],
)
def test_completeness_requirements_refuse_bad_keys_and_values(
    required: dict[str, float], message: str
) -> None:
    from core.settings import TargetsSettings

    with pytest.raises(ValueError, match=message) as err:
        TargetsSettings(completeness_required=required)
    assert next(iter(required)) in str(err.value)


async def test_levels_follow_configured_rules(
    sim_db: tuple[str, simdata.Sim], settings_factory: Callable[..., Settings]
) -> None:
    """Raising the thresholds turns the same data green: the levels come from the settings."""
    url, _sim = sim_db
    lax = settings_factory(
        reports={
            "city_change_pct": {"yellow": 500.0},
            "release_events": {"orange": 50},
            "ack_median_min": {"red": 600.0},
            "exceedance_over_allowed_h": {"red": 100.0},
        },
        targets={"completeness_required": {"cems": 0.0, "city": 0.0, "mine": 0.0, "leak": 0.0}},
    )
    report = await _report(url, lax)
    assert report.worst() == "green", [(w.source_id, w.level) for w in report.warnings]


async def test_html_is_self_contained_with_plots_and_bilingual_headings(
    sim_db: tuple[str, simdata.Sim], report_settings: Settings
) -> None:
    """The HTML embeds every plot as a PNG data URI, fetches nothing, has headings in both
    languages and the warning list with reasons; the JSON parses and carries the figures."""
    url, _sim = sim_db
    report = await _report(url, report_settings)
    figures = [f for s in report.sections for f in s.figures]
    assert {f.key for f in figures} >= {"city_trend", "mine_exceedance", "completeness"}
    assert all(f.png.startswith(b"\x89PNG") and len(f.png) > 5000 for f in figures)
    html = render_html(report)
    assert html.count('src="data:image/png;base64,') == len(figures)
    for remote in ("http://", "https://", "<link", "<script"):
        assert remote not in html
    for heading in ("预警清单", "Warning list", "城市温室气体浓度增量", "Data completeness"):
        assert heading in html
    assert "100.0 % year on year" in html or "year on year" in html
    data = json.loads(render_json(report))
    assert data["quarter"] == "2026Q3"
    assert "png" not in json.dumps(data["sections"][0]["figures"])


async def test_the_full_report_with_cems_units_shows_their_plots_and_warnings(
    sim_db: tuple[str, simdata.Sim], settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """With seven quarters of CEMS unit-hours beside the other sources, the whole report
    carries the plants ranked by intensity, the regions' projection against target and the
    monthly trend against last year; the plant over budget and the lagging region are in the
    warning list with their reasons, in the HTML and the JSON."""
    url, _sim = sim_db
    units = cems_sim.simulate(np.random.default_rng(11))
    await cems_sim.store(url, units)
    cems = cems_sim.settings_for(units)
    s = settings_factory(
        reports={"out_dir": str(tmp_path / "out")},
        targets=REPORT_SETTINGS | cems["targets"],
        detection=cems["detection"],
    )
    report = await _report(url, s)
    figures = {f.key: f for sec in report.sections for f in sec.figures}
    assert set(figures) >= {"plants_intensity", "regions_projection", "regions_trend"}
    assert all(f.png.startswith(b"\x89PNG") and len(f.png) > 5000 for f in figures.values())
    levels = report.levels()
    assert levels["plant:beifang-power/baotou-plant"] == "red"
    assert levels["region:Ordos"] == "red"
    html = render_html(report)
    assert html.count('src="data:image/png;base64,') == len(figures)
    for text in ("盟市月度排放趋势", "Regions lagging behind their target: Ordos",
                 "beifang-power/baotou-plant", "capture_75_90"):  # fmt: skip
        assert text in html, text
    # the trend's months are the units' own: July-September add up to the quarter's total
    plants = _section(report, "plants")
    for u in plants.data["units"]:
        if u["quarter_t"] is not None:
            assert sum(u["monthly_t"][6:9]) == pytest.approx(u["quarter_t"], rel=1e-6)


async def test_a_quarter_with_no_data_says_so_and_invents_nothing(
    sim_db: tuple[str, simdata.Sim], report_settings: Settings
) -> None:
    """2024Q1, before any device: the report says in words there is no data; no figures."""
    url, _sim = sim_db
    report = await _report(url, report_settings, Quarter(2024, 1))
    assert not report.has_data
    assert report.warnings == []
    assert "No data is stored for 2024Q1" in report.notes_en[0]
    html = render_html(report)
    assert "No data is stored for 2024Q1" in html
    assert "<img" not in html


def test_unknown_quarter_string_is_refused_with_the_expected_format() -> None:
    from reports import QuarterFormatError

    with pytest.raises(QuarterFormatError, match=r"expected YYYYQn with n 1-4, e.g. 2026Q3"):
        Quarter.parse("2026-Q5")
    assert asyncio.iscoroutinefunction(build_report)
