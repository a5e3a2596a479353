"""The on-call console in a real browser (headless Debian Chromium driven by Playwright) on a
running stack: Mosquitto, tansu, PostgreSQL, the bridge, processor, detector, alert service
and the on-call API serving the console.

Two mine gas releases are published over MQTT at two sites. On a desktop-sized page the
on-call engineer logs in, sees the first release appear on the overview (htmx refresh),
opens it (history, readings chart) and acknowledges it with the button. On a phone-sized
page the engineer of the second site opens the link from the notification the webhook got
and acknowledges with one tap. Screenshots are kept in ``build/console-browser/`` (ignored
by git); their paths are printed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import numpy as np
import pytest
from pydantic import SecretStr

from adapters.ports import free_port
from alerts import AlertApi
from core.settings import Settings
from tests.alerts.conftest import Receiver, receiver, wait_until
from tests.test_paging_e2e import _fetch, _paging_settings, _quiet, running_services

__all__ = ["receiver"]  # the fixture, imported for this module's tests

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "build" / "console-browser"
TOKEN = "browser-test-token-0123456789abcdef"
USER = "desk.wang"
DEADLINE_S = 45.0
UI_TIMEOUT_MS = 30_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SITES = (("ordos-coal", "buertai", "t1-0302"), ("ordos-coal", "halagou", "t1-0105"))

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


async def _publish_release(settings: Settings, t0: datetime) -> None:
    """Both sites' T1 sensors: 30 quiet readings, then methane past the 1.0 % alarm."""
    step_s = 10.0
    hostport = settings.mqtt_url().split("://", 1)[1]
    host, _, port = hostport.partition(":")
    async with aiomqtt.Client(host, int(port or 1883), identifier=f"rel-{id(t0)}") as c:
        for i, (network, site, device) in enumerate(SITES):
            readings = _quiet(np.random.default_rng(i), t0, 30, step_s)
            start = t0 + timedelta(seconds=step_s * len(readings))
            rise = [0.5, 0.8, 1.05, 1.2] + [1.3] * 8
            readings += [(start + timedelta(seconds=step_s * k), v) for k, v in enumerate(rise)]
            topic = f"{settings.mqtt.topic_root}/mine/{network}/{site}/{device}/data"
            for ts, value in readings:
                body = {"ts": ts.isoformat(), "metric": "ch4_pct_vol", "value": value}
                body["location"] = "T1"
                await c.publish(topic, json.dumps(body).encode(), qos=1)


async def test_console_in_chromium_shows_a_release_and_acknowledges_it_desktop_and_phone(
    settings_factory: Callable[..., Settings], test_id: str, receiver: Receiver
) -> None:
    from playwright.async_api import async_playwright, expect

    base = _paging_settings(settings_factory, test_id, receiver)
    port = free_port()
    settings = base.model_copy(
        update={
            "alerts": base.alerts.model_copy(
                update={"api_port": port, "api_tokens": {USER: SecretStr(TOKEN)}}
            )
        }
    )
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    shots: list[Path] = []
    console = f"http://127.0.0.1:{port}/console"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)

    async with running_services(settings), async_playwright() as pw:
        api = AlertApi(settings)
        stop = asyncio.Event()
        api_task = asyncio.create_task(api.run(stop=stop))
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            async with asyncio.timeout(20):
                await api.started.wait()
            desk = await browser.new_page(viewport=DESKTOP)

            async def shot(page: object, name: str) -> None:
                path = SHOTS / f"{len(shots) + 1:02d}-{name}.png"
                await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
                shots.append(path)

            # Every request the pages make stays on this server (no CDN): recorded here.
            elsewhere: list[str] = []
            desk.on(
                "request",
                lambda r: (
                    None if r.url.startswith("http://127.0.0.1:") else elsewhere.append(r.url)
                ),
            )
            await desk.goto(f"http://127.0.0.1:{port}/docs")
            await expect(desk.locator(".opblock").first).to_be_visible(timeout=UI_TIMEOUT_MS)
            await expect(
                desk.locator("#operations-alerts-ack_alert_alerts__alert_id__ack_post")
            ).to_be_visible()
            await shot(desk, "docs-offline")

            # Log in once with the API token; the console keeps a session.
            await desk.goto(console)
            await expect(desk.locator("h1")).to_have_text("Log in")
            await desk.fill("#token", TOKEN)
            await desk.click("button[type=submit]")
            await expect(desk.locator("#alerts-open")).to_contain_text("No active alerts.")
            await shot(desk, "overview-before")

            # A gas release over MQTT: the overview refreshes itself and shows it.
            await _publish_release(settings, t0)
            first = desk.locator("li.alert.sev-critical", has_text=SITES[0][1])
            await expect(first).to_be_visible(timeout=UI_TIMEOUT_MS)
            await expect(desk.locator("#sources")).to_contain_text("flowing")
            await expect(desk.locator("#timeline")).to_contain_text("threshold_alarm")
            await shot(desk, "overview-release")

            # Open it: history, the readings chart, then acknowledge with the button.
            await first.locator("a").click()
            await expect(desk.locator("#state")).to_have_text("open")
            await expect(desk.locator("#chart .uplot")).to_be_visible(timeout=UI_TIMEOUT_MS)
            assert int(await desk.locator("#chart").get_attribute("data-points") or 0) >= 30
            await shot(desk, "alert-open")
            await desk.click("#ack")
            await expect(desk.locator("#state")).to_have_text("acknowledged")
            await expect(desk.locator("#acked")).to_contain_text(USER)
            await shot(desk, "alert-acknowledged")

            # The second site's engineer taps the link of the notification on a phone.
            def link_for_second_site() -> str | None:
                for req in receiver.got("/hook"):
                    alert = req.json()["alert"]
                    if alert["site"] == SITES[1][1] and alert.get("ack_url"):
                        return str(alert["ack_url"])
                return None

            link = await wait_until(link_for_second_site, "the 2nd site's notification", DEADLINE_S)
            phone_ctx = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
            phone = await phone_ctx.new_page()
            await phone.goto(link)
            await expect(phone.locator("#ack")).to_be_visible()
            await shot(phone, "phone-link")
            await phone.tap("#ack")
            await expect(phone.locator("#done")).to_contain_text("Acknowledged by oncall")
            await shot(phone, "phone-acknowledged")
            await phone.goto(link)
            await expect(phone.locator("h1")).to_contain_text("used already")
            await shot(phone, "phone-link-reused")
            # The console on the phone: readable without sideways scrolling.
            await phone.goto(console)
            await phone.fill("#token", TOKEN)
            await phone.tap("button[type=submit]")
            await expect(phone.locator("#alerts-open li.alert")).to_have_count(2)
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], width
            await shot(phone, "phone-overview")
            assert elsewhere == [], elsewhere
        finally:
            await browser.close()
            stop.set()
            async with asyncio.timeout(20):
                await api_task

    rows = await _fetch(
        settings.db_url(), "SELECT site, state, acknowledged_by FROM alerts ORDER BY site"
    )
    assert [(r["site"], r["state"], r["acknowledged_by"]) for r in rows] == [
        (SITES[0][1], "acknowledged", USER),
        (SITES[1][1], "acknowledged", "oncall"),
    ]
    events = await _fetch(
        settings.db_url(),
        "SELECT e.actor, e.detail FROM alert_events e JOIN alerts a USING (alert_id)"
        " WHERE e.event = 'acknowledged' AND a.site = $1",
        SITES[1][1],
    )
    assert len(events) == 1
    assert events[0]["actor"] == "oncall"
    assert '"via": "link"' in str(events[0]["detail"]) or events[0]["detail"]["via"] == "link"
    for path in shots:
        assert path.stat().st_size > 5_000, path
        print(f"screenshot: {path}")
