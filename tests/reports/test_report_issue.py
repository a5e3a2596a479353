"""Issuing the quarterly report: the CLI, stored revisions, files (HTML, JSON, PDF), the HTML
in headless Chromium, and orange/red warnings raised through the real alert service."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from PIL import Image, ImageChops

from alerts import AlertService
from core.settings import Settings
from reports import issue_quarterly
from reports.model import Section
from reports.render import chromium_path, render_html
from reports.report import Report
from tests.alerts.conftest import wait_until
from tests.reports import cems_sim
from tests.reports import report_sim as simdata
from tests.reports.report_sim import BUERTAI, Q

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
TARGETS = {"city_baseline_ppm": {"baotou": 9.0},
           "mine_allowed_exceedance_h": {"ordos-coal/buertai": 2.0}}  # fmt: skip


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghgwatch", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_issues_revisions_lists_and_shows_them(sim_url: str, tmp_path: Path) -> None:
    """`report quarterly` writes HTML, JSON (and a PDF with Chromium) and stores revision 1,
    then 2; `report list` finds both, `report show` prints the warnings with reasons; an
    unknown quarter is refused with the expected format."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env |= {"GHGWATCH_DB__URL": sim_url, "GHGWATCH_TARGETS": json.dumps(TARGETS)}
    out = tmp_path / "out"
    code, stdout, stderr = await _cli(env, "report", "quarterly", "2026Q3", "--out", str(out))
    assert code == 0, stderr
    assert "issued 2026Q3 revision 1" in stdout
    assert (out / "2026Q3-r1.html").stat().st_size > 20_000
    assert json.loads((out / "2026Q3-r1.json").read_text())["revision"] == 1
    if chromium_path():
        assert (out / "2026Q3-r1.pdf").read_bytes().startswith(b"%PDF")
    code, stdout, _ = await _cli(env, "report", "quarterly", "2026q3", "--out", str(out),
                                 "--no-pdf")  # fmt: skip
    assert code == 0
    assert "revision 2" in stdout
    code, stdout, _ = await _cli(env, "report", "list", "--json")
    rows = json.loads(stdout)
    assert [(r["quarter"], r["revision"]) for r in rows] == [("2026Q3", 2), ("2026Q3", 1)]
    assert rows[0]["alerts"] == 4  # baotou city, buertai, hadamen, the CEMS unit
    code, stdout, _ = await _cli(env, "report", "show", str(rows[1]["report_id"]))
    assert code == 0
    assert "2026Q3 revision 1" in stdout
    assert "red    city baotou: up" in stdout
    html_copy = tmp_path / "copy.html"
    code, _, _ = await _cli(env, "report", "show", str(rows[0]["report_id"]), "--html",
                            str(html_copy))  # fmt: skip
    assert "revision 2" in html_copy.read_text()
    conn = await asyncpg.connect(sim_url)
    try:
        stored = await conn.fetchrow(
            "SELECT data_from, data_to, settings, report FROM quarterly_reports WHERE revision = 1"
        )
    finally:
        await conn.close()
    assert stored["data_from"] == Q.start("Asia/Shanghai")
    used = json.loads(stored["settings"])
    assert used["targets"]["city_baseline_ppm"] == {"baotou": 9.0}
    # the CEMS figures' settings too: classes, benchmarks, emission factor, sites, aux rate
    assert used["detection"]["co2_t_per_t_sce"] == 2.66
    assert used["detection"]["cems_default_aux_power_frac"] == 0.06
    assert "600mw_sc" in used["detection"]["cems_benchmarks_g_sce_kwh"]
    assert set(used["detection"]) >= {"cems_sites", "cems_unit_class", "min_valid_minutes"}
    code, _, stderr = await _cli(env, "report", "quarterly", "2026Q5")
    assert code == 2
    assert "expected YYYYQn" in stderr


CJK_FONT_PACKAGE = "fonts-wqy-microhei"  # .ci/run installs it next to chromium
NO_CHROMIUM = "Debian's chromium package is not installed (apt-get install chromium)"
# the whole report with CEMS units: its units table is about 2,100 px wide, the page about
# 14,800 px tall at that width (the asserts below fail when it outgrows the window)
SHOT_W, SHOT_H = 2200, 15_500


def _screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int]) -> Image.Image:
    """``page`` as headless Chromium draws it in a window of ``size`` (the CLI, as in CI)."""
    png.unlink(missing_ok=True)
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
         f"--screenshot={png}", page.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-500:]
    assert png.read_bytes().startswith(b"\x89PNG")
    with Image.open(png) as im:
        return im.convert("RGB")


def _heading_page(tmp_path: Path, name: str, heading: str | None) -> Path:
    """The report's own HTML (its CSS and fonts) with one section headed ``heading``."""
    t = datetime(2026, 7, 1, tzinfo=UTC)
    sections = [] if heading is None else [Section(key="s", title_zh=heading, title_en="x")]
    report = Report(quarter="2026Q3", generated_at=t, timezone="Asia/Shanghai", data_from=t,
                    data_to=t, has_data=False, sections=sections)  # fmt: skip
    page = tmp_path / f"{name}.html"
    page.write_text(render_html(report), encoding="utf-8")
    return page


def assert_chinese_headings_render(tmp_path: Path) -> None:
    """Chinese headings are drawn in real glyphs, not tofu.

    Without a font that has them, Chromium draws every CJK character as the same empty box,
    so two headings of different characters (same count) give identical pixels; with the
    font they differ, and either differs from the page without the heading.
    """
    cjk = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False
    )
    assert cjk.stdout.strip(), f"no CJK font for Chinese (apt-get install {CJK_FONT_PACKAGE})"
    profile = tmp_path / "chromium-cjk"
    shots = {}
    for name, heading in [("a", "数据完整性"), ("b", "预警清单等"), ("none", None)]:
        page = _heading_page(tmp_path, name, heading)
        shots[name] = _screenshot(page, tmp_path / f"{name}.png", profile, (800, 400))
    assert ImageChops.difference(shots["a"], shots["none"]).getbbox(), "heading not drawn"
    assert ImageChops.difference(shots["a"], shots["b"]).getbbox(), (
        f"different Chinese characters draw identically: tofu, no CJK glyphs in the fonts"
        f" the report's CSS names ({cjk.stdout.strip()!r}; apt-get install {CJK_FONT_PACKAGE})"
    )


@pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
def test_chinese_headings_render_in_a_cjk_font_not_tofu(tmp_path: Path) -> None:
    """The report's CSS reaches an installed CJK font: Chinese draws as glyphs."""
    assert_chinese_headings_render(tmp_path)


@pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
async def test_html_report_renders_in_headless_chromium(
    sim_url: str, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """Chromium renders the stored HTML offline to a screenshot, kept as an artefact: the
    whole report with CEMS units beside the other sources (plants ranked by intensity, the
    regions' projection, the over-budget and lagging-region warnings), Chinese in glyphs."""
    units = cems_sim.simulate(np.random.default_rng(11))
    await cems_sim.store(sim_url, units)
    cems = cems_sim.settings_for(units)
    s = settings_factory(
        reports={"out_dir": str(tmp_path), "pdf": False},
        targets=TARGETS | cems["targets"],
        detection=cems["detection"],
    )
    result = await issue_quarterly(s, Q)
    figures = {f.key for sec in result.report.sections for f in sec.figures}
    assert figures >= {"plants_intensity", "regions_projection", "regions_trend"}
    levels = result.report.levels()
    assert levels["plant:beifang-power/baotou-plant"] == "red"
    assert levels["region:Ordos"] == "red"
    html = result.files[0]
    assert "Regions lagging behind their target: Ordos" in html.read_text(encoding="utf-8")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "quarterly-2026Q3.png"
    image = _screenshot(html, shot, tmp_path / "chromium", (SHOT_W, SHOT_H))
    assert shot.stat().st_size > 50_000  # a page of tables and plots, not a blank one
    # the window holds the whole page: its last rows and columns are the page's white margin
    white = ((255, 255), (255, 255), (255, 255))
    assert image.crop((0, SHOT_H - 40, SHOT_W, SHOT_H)).getextrema() == white, "cut off below"
    assert image.crop((SHOT_W - 24, 0, SHOT_W, SHOT_H)).getextrema() == white, "cut off right"
    assert_chinese_headings_render(tmp_path)
    print(f"screenshot: {shot}")


async def _quarterly_alerts(url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT device_id, state, condition_active FROM alerts"
            " WHERE detector = 'quarterly_warning' ORDER BY alert_id"
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_orange_and_red_raise_alerts_once_and_a_changed_level_a_new_one(
    sim_url: str,
    alert_settings: Callable[..., Settings],
    running: Callable[..., asyncio.Task[Any]],
    tmp_path: Path,
) -> None:
    """Through Kafka and the real alert service: one alert per orange/red source; issuing
    again publishes nothing; late data turning buertai red raises a new alert and resolves
    the orange one."""
    base = alert_settings(resolve_hold_s=0.1)
    s = base.model_copy(update={
        "reports": base.reports.model_copy(update={"out_dir": tmp_path, "pdf": False}),
        "targets": base.targets.model_copy(update=TARGETS),
    })  # fmt: skip
    stop = asyncio.Event()
    running(AlertService(s).run(stop=stop), stop)
    first = await issue_quarterly(s, Q, publish=True)
    assert (first.alerts_opened, first.alerts_cleared) == (4, 0)
    alerts = await wait_until(lambda: _alerts_if(sim_url, 4), "four quarterly alerts", timeout_s=30)
    devices = {a["device_id"] for a in alerts}
    assert "quarterly/2026Q3/mine/ordos-coal/buertai/orange" in devices
    assert "quarterly/2026Q3/city/baotou/red" in devices
    again = await issue_quarterly(s, Q, publish=True)
    assert again.issued is not None
    assert again.issued.revision == 2
    assert (again.alerts_opened, again.alerts_cleared) == (0, 0)
    conn = await asyncpg.connect(sim_url)
    try:  # late data: a 10-hour alarm at buertai
        await simdata.add_alarm(conn, BUERTAI[1], simdata.local(2026, 9, 20, 0),
                                simdata.local(2026, 9, 20, 10))  # fmt: skip
    finally:
        await conn.close()
    late = await issue_quarterly(s, Q, publish=True, only_if_changed=True)
    assert late.issued is not None
    assert late.issued.revision == 3
    assert late.report.levels()["mine:ordos-coal/buertai"] == "red"
    assert (late.alerts_opened, late.alerts_cleared) == (1, 1)

    async def settled() -> list[dict[str, Any]] | None:
        rows = await _quarterly_alerts(sim_url)
        by = {r["device_id"]: r for r in rows}
        old = by.get("quarterly/2026Q3/mine/ordos-coal/buertai/orange")
        new = by.get("quarterly/2026Q3/mine/ordos-coal/buertai/red")
        return rows if old and new and old["state"] == "resolved" else None

    rows = await wait_until(settled, "red alert opened, orange resolved", timeout_s=30)
    assert len(rows) == 5
    unchanged = await issue_quarterly(s, Q, publish=True, only_if_changed=True)
    assert unchanged.unchanged
    assert (unchanged.alerts_opened, unchanged.alerts_cleared) == (0, 0)


async def _alerts_if(url: str, n: int) -> list[dict[str, Any]] | None:
    rows = await _quarterly_alerts(url)
    return rows if len(rows) >= n else None
