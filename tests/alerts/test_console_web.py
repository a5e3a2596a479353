"""The web console on a real uvicorn server over the real database: sessions, anti-forgery
tokens, the one-tap acknowledgement links of notifications, the overview and offline docs."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from adapters.ports import free_port
from alerts import AlertApi, AlertFilter, AlertStore
from alerts.links import sign
from core.settings import Settings
from tests.alerts.conftest import det

TOKEN = "console-token-for-li-na-0123456789"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Console:
    """A running API with a console, an anonymous client and the store behind it."""

    url: str
    web: httpx.AsyncClient
    store: AlertStore
    settings: Settings


@pytest.fixture
async def console(alert_settings: Callable[..., Settings]) -> AsyncIterator[Console]:
    """The API on a free port: one token (li.na), on-call staff are one webhook."""
    port = free_port()
    s = alert_settings(
        api_port=port,
        api_tokens={"li.na": TOKEN},
        notifiers=[{"name": "oncall-li", "type": "webhook", "url": "http://127.0.0.1:9/hook"}],
        routes=[{"name": "all", "targets": ["oncall-li"]}],
    )
    server = AlertApi(s)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop=stop))
    async with asyncio.timeout(20):
        await server.started.wait()
    try:
        async with (
            AlertStore(s.db_url(), s.alerts, s.db, s.console) as store,
            httpx.AsyncClient(base_url=server.url, timeout=10) as web,
        ):
            yield Console(server.url, web, store, s)
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


async def _open_alert(c: Console) -> int:
    await c.store.apply_detections([det()], datetime.now(UTC))
    (alert,) = await c.store.reads.list_alerts(AlertFilter())
    return alert.alert_id


async def _log_in(c: Console) -> str:
    """Log the client in; returns the session's anti-forgery token."""
    r = await c.web.post("/console/login", data={"token": TOKEN, "next": "/console"})
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    page = await c.web.get("/console")
    assert page.status_code == 200
    match = _CSRF.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


async def _ack_link(c: Console, alert_id: int) -> str:
    """The acknowledgement link the alert's opening notification carries (path only)."""
    conn = await asyncpg.connect(c.settings.db_url())
    try:
        payload = await conn.fetchval(
            "SELECT payload FROM alert_outbox WHERE alert_id = $1 AND target = 'oncall-li'",
            alert_id,
        )
    finally:
        await conn.close()
    url = json.loads(payload)["ack_url"]
    assert url.startswith(f"{c.url}/console/ack/"), url
    return urlsplit(url).path


async def test_console_actions_are_refused_without_a_session_or_anti_forgery_token(
    console: Console,
) -> None:
    """No session: pages redirect to the log-in, actions get 401 and change nothing; a
    session without its anti-forgery token gets 403; with both the alert is acknowledged by
    the token's name."""
    c = console
    aid = await _open_alert(c)
    page = await c.web.get("/console")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/login")
    assert (await c.web.get(f"/console/alerts/{aid}/readings")).status_code == 401
    for action in ("ack", "resolve", "silence"):
        r = await c.web.post(f"/console/alerts/{aid}/{action}", data={"csrf": "x"})
        assert r.status_code == 401, (action, r.status_code)
    # A forged session cookie (signed with another key) is no session.
    forged = sign(b"k" * 32, "session", "li.na", "li.na", datetime.now(UTC), 3600)
    async with httpx.AsyncClient(
        base_url=c.url, cookies={"ghgwatch_session": forged}, timeout=10
    ) as other:
        r = await other.post(f"/console/alerts/{aid}/ack", data={"csrf": "x"})
    assert r.status_code == 401
    assert (await c.store.reads.get_alert(aid)).alert.state == "open"

    bad = await c.web.post("/console/login", data={"token": "wrong"})
    assert bad.status_code == 401
    assert "ghgwatch_session" not in bad.headers.get("set-cookie", "")

    csrf = await _log_in(c)
    r = await c.web.post(f"/console/alerts/{aid}/ack", data={})
    assert r.status_code == 403
    r = await c.web.post(f"/console/alerts/{aid}/ack", data={"csrf": csrf + "x"})
    assert r.status_code == 403
    assert (await c.store.reads.get_alert(aid)).alert.state == "open"

    r = await c.web.post(f"/console/alerts/{aid}/ack", data={"csrf": csrf})
    assert r.status_code == 303
    detail = await c.store.reads.get_alert(aid)
    assert (detail.alert.state, detail.alert.acknowledged_by) == ("acknowledged", "li.na")
    page = await c.web.get(f"/console/alerts/{aid}")
    assert "acknowledged" in page.text
    assert "li.na" in page.text
    # The bearer API is unchanged: the console's cookie does not open it.
    assert (await c.web.get("/alerts")).status_code == 401


async def test_notification_link_shows_the_alert_acknowledges_once_on_post_records_who(
    console: Console,
) -> None:
    """The opening notification carries a link signed for its recipient. GET shows the alert
    and an Acknowledge button and changes nothing (a chat app's preview); POST acknowledges
    and the history names the recipient; the same link again is refused."""
    c = console
    aid = await _open_alert(c)
    path = await _ack_link(c, aid)

    for _ in range(2):  # previews fetch it, maybe twice
        shown = await c.web.get(path)
        assert shown.status_code == 200
        assert 'id="ack"' in shown.text
        assert "im/shendong-3" in shown.text
    assert shown.headers["referrer-policy"] == "no-referrer"
    assert (await c.store.reads.get_alert(aid)).alert.state == "open"

    done = await c.web.post(path)
    assert done.status_code == 200, done.text
    assert "Acknowledged by oncall-li" in done.text
    detail = await c.store.reads.get_alert(aid)
    assert (detail.alert.state, detail.alert.acknowledged_by) == ("acknowledged", "oncall-li")
    (ack,) = [e for e in detail.events if e.event == "acknowledged"]
    assert ack.actor == "oncall-li"
    assert ack.detail["via"] == "link"
    assert ack.detail["recipient"] == "oncall-li"

    again = await c.web.post(path)
    assert again.status_code == 409
    assert "used already" in again.text
    assert (await c.web.get(path)).status_code == 409


async def test_tampered_expired_and_foreign_links_are_refused_with_a_page(
    console: Console,
) -> None:
    """A changed character, an expired link, a session token used as a link, and garbage:
    each refused with its own status and page, the alert untouched."""
    c = console
    aid = await _open_alert(c)
    path = await _ack_link(c, aid)
    token = path.rsplit("/", 1)[1]
    body, _, mac = token.partition(".")
    swapped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    key = await c.store.link_key()
    past = datetime.now(UTC) - timedelta(days=2)
    cases = {
        f"{swapped}.{mac}": (403, "changed"),
        sign(key, "ack", str(aid), "oncall-li", past, 3600): (410, "expired"),
        sign(key, "session", "li.na", "li.na", datetime.now(UTC), 3600): (403, "not an ackn"),
        "not-a-link": (400, "not a valid"),
    }
    for bad, (code, words) in cases.items():
        for method in ("GET", "POST"):
            r = await c.web.request(method, f"/console/ack/{bad}")
            assert r.status_code == code, (bad, method, r.status_code)
            assert words in r.text, (bad, r.text[:300])
    assert (await c.store.reads.get_alert(aid)).alert.state == "open"


async def test_overview_shows_sources_dead_letters_detections_and_no_reports_yet(
    console: Console,
) -> None:
    """The overview lists sources per kind and network with flowing or not, the dead
    letters, the open alert and its detection on the time line, and no reports yet."""
    c = console
    now = datetime.now(UTC)
    conn = await asyncpg.connect(c.settings.db_url())
    try:
        await conn.executemany(
            "INSERT INTO devices (device_id, kind, network, site, device, first_seen, last_seen)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6)",
            [
                ("ordos-coal/buertai/t1-01", "mine", "ordos-coal", "buertai", "t1-01", now),
                (
                    "ordos-coal/buertai/t1-02",
                    "mine",
                    "ordos-coal",
                    "buertai",
                    "t1-02",
                    now - timedelta(hours=3),
                ),
                ("baotou/kunqu/c-1", "city", "baotou", "kunqu", "c-1", now),
            ],
        )
        await conn.execute(
            "INSERT INTO dead_letters (mqtt_topic, reason, detail, payload, payload_sha256,"
            " received_at, last_received_at, occurrences)"
            " VALUES ('ghg/v1/mine/x/y/z/data', 'bad_json', 'x', 'x', 'x', $1, $1, 3)",
            now,
        )
        await conn.execute(
            "INSERT INTO detections (detection_id, state, device_id, kind, network, site,"
            " metric, detector, severity, started_at, score, value)"
            " VALUES ('d1', 'open', 'ordos-coal/buertai/t1-01', 'mine', 'ordos-coal', 'buertai',"
            " 'ch4_pct_vol', 'threshold_alarm', 'critical', $1, 5, 1.2)",
            now - timedelta(minutes=5),
        )
    finally:
        await conn.close()
    aid = await _open_alert(c)
    await _log_in(c)
    part = await c.web.get("/console/parts/overview")
    assert part.status_code == 200
    html = part.text
    assert re.search(
        r"<td>mine</td><td>ordos-coal</td><td>2</td>\s*<td><span class=\"warn\">1 silent", html
    )
    assert re.search(
        r"<td>city</td><td>baotou</td><td>1</td>\s*<td><span class=\"ok\">flowing", html
    )
    assert "<strong>1</strong> rejected messages" in html
    assert "bad_json" in html
    assert f'data-alert-id="{aid}"' in html
    assert "threshold_alarm · ordos-coal/buertai/t1-01" in html
    assert "No reports yet." in html
    assert "script-src 'self'" in part.headers["content-security-policy"]


async def test_docs_and_console_load_nothing_from_another_host(console: Console) -> None:
    """/docs and the console pages reference only this server; the assets are served."""
    c = console
    docs = await c.web.get("/docs")
    assert docs.status_code == 200
    login = await c.web.get("/console/login")
    for page in (docs.text, login.text):
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", page)
        refs += re.findall(r"""url:\s*['"]([^'"]+)""", page)
        assert refs
        external = [r for r in refs if re.match(r"(?i)^(https?:)?//", r)]
        assert external == [], external
        for ref in refs:
            if ref.startswith("/console/static/"):
                got = await c.web.get(ref)
                assert got.status_code == 200, ref
                assert len(got.content) > 100, ref
    assert "swagger-ui-bundle.js" in docs.text


async def test_resolve_and_silence_from_the_console_are_recorded_under_the_user(
    console: Console,
) -> None:
    """Silence then resolve with the buttons' forms: both in the history under the token's
    name; resolving again is refused with a page (409) and changes nothing."""
    c = console
    aid = await _open_alert(c)
    csrf = await _log_in(c)
    r = await c.web.post(
        f"/console/alerts/{aid}/silence", data={"csrf": csrf, "duration_s": "14400"}
    )
    assert r.status_code == 303
    r = await c.web.post(f"/console/alerts/{aid}/resolve", data={"csrf": csrf, "note": "vented"})
    assert r.status_code == 303
    detail = await c.store.reads.get_alert(aid)
    assert (detail.alert.state, detail.alert.resolved_by) == ("resolved", "li.na")
    assert detail.alert.silenced_until is not None
    started = detail.alert.silenced_until - timedelta(hours=4)
    assert abs((started - datetime.now(UTC)).total_seconds()) < 60
    by_event = {e.event: e for e in detail.events}
    assert by_event["resolved"].actor == "li.na"
    assert by_event["resolved"].detail.get("note") == "vented"
    again = await c.web.post(f"/console/alerts/{aid}/resolve", data={"csrf": csrf})
    assert again.status_code == 409
    assert "Not possible now" in again.text


async def test_an_expired_session_or_one_whose_token_was_removed_is_no_session(
    console: Console,
) -> None:
    c = console
    aid = await _open_alert(c)
    key = await c.store.link_key()
    past = datetime.now(UTC) - timedelta(days=1)
    cookies = {
        "expired": sign(key, "session", "li.na", "li.na", past, 3600),
        "removed token": sign(key, "session", "gone", "gone", datetime.now(UTC), 3600),
        "a link, not a session": sign(key, "ack", str(aid), "li.na", datetime.now(UTC), 3600),
    }
    for what, cookie in cookies.items():
        async with httpx.AsyncClient(
            base_url=c.url, cookies={"ghgwatch_session": cookie}, timeout=10
        ) as other:
            page = await other.get("/console")
            assert page.status_code == 303, what
            r = await other.post(f"/console/alerts/{aid}/ack", data={"csrf": "x"})
            assert r.status_code == 401, what
    assert (await c.store.reads.get_alert(aid)).alert.state == "open"


async def test_reports_are_listed_once_their_table_exists(console: Console) -> None:
    c = console
    await _log_in(c)
    conn = await asyncpg.connect(c.settings.db_url())
    try:
        await conn.execute(
            "CREATE TABLE reports (report_id serial PRIMARY KEY, quarter text, title text,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(
            "INSERT INTO reports (quarter, title, created_at) VALUES"
            " ('2026Q2', 'Ordos Q2', now() - interval '90 days'), ('2026Q3', 'Ordos Q3', now())"
        )
    finally:
        await conn.close()
    html = (await c.web.get("/console/parts/overview")).text
    assert "No reports yet." not in html
    assert html.index("2026Q3") < html.index("2026Q2")  # newest first
    assert "Ordos Q3" in html
