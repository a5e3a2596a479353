"""Signed acknowledgement links and session tokens (pure), and the link each notification
carries (one per recipient)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alert_views import alert_view
from pydantic import ValidationError

from alerts.links import LinkRefused, LinkSigner, csrf_token, sign, verify
from alerts.notices import alert_message, outbox_entries
from core.settings import AlertsSettings, ConsoleSettings, Settings

KEY = bytes(range(32))
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
ALERT = alert_view(NOW, alert_id=31, value=1.05)


def test_a_link_verifies_with_its_key_for_its_purpose_until_it_expires() -> None:
    token = sign(KEY, "ack", "42", "oncall-zhang", NOW, 3600)
    claims = verify(KEY, token, "ack", NOW + timedelta(seconds=3599))
    assert (claims.purpose, claims.subject, claims.recipient) == ("ack", "42", "oncall-zhang")
    assert claims.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(LinkRefused) as exc:
        verify(KEY, token, "ack", NOW + timedelta(seconds=3600))
    assert exc.value.reason == "expired"
    with pytest.raises(LinkRefused) as exc:
        verify(KEY, token, "session", NOW)
    assert exc.value.reason == "wrong_purpose"
    with pytest.raises(LinkRefused) as exc:
        verify(b"another key of thirty-two bytes!", token, "ack", NOW)
    assert exc.value.reason == "tampered"


def test_every_changed_character_of_a_link_is_refused() -> None:
    """Changing any one character (claims, separator or MAC) makes the link unusable."""
    token = sign(KEY, "ack", "7", "oncall", NOW, 3600)
    for i, ch in enumerate(token):
        other = "A" if ch != "A" else "B"
        changed = token[:i] + other + token[i + 1 :]
        with pytest.raises(LinkRefused):
            verify(KEY, changed, "ack", NOW)
    for broken in ("", ".", "abc", token + "x", token.replace(".", ""), "é." * 3, "a" * 5000):
        with pytest.raises(LinkRefused):
            verify(KEY, broken, "ack", NOW)


def test_two_links_for_the_same_alert_differ_and_csrf_is_per_session() -> None:
    a = sign(KEY, "ack", "1", "x", NOW, 60)
    b = sign(KEY, "ack", "1", "x", NOW, 60)
    assert a != b
    na, nb = verify(KEY, a, "ack", NOW).nonce, verify(KEY, b, "ack", NOW).nonce
    assert na != nb
    assert csrf_token(KEY, na) != csrf_token(KEY, nb)
    assert csrf_token(KEY, na) == csrf_token(KEY, na)


def test_each_recipient_gets_its_own_link_and_a_resolution_none() -> None:
    """The outbox rows of one opening carry a link per target naming that target; the
    resolution's rows and the Grafana record carry none."""
    cfg = AlertsSettings(
        notifiers=[
            {"name": "zhang", "type": "webhook", "url": "http://127.0.0.1:9/a"},
            {"name": "li", "type": "webhook", "url": "http://127.0.0.1:9/b"},
        ],
        routes=[{"name": "r", "targets": ["zhang", "li"]}],
        grafana_url="http://grafana.local",
    )
    signer = LinkSigner("http://desk.local:9643", 600)
    signer.key = KEY
    channels = {"zhang": "webhook", "li": "webhook"}
    for event, expect_links in (("opened", True), ("resolved", False)):
        msg = alert_message(ALERT, event, cfg, NOW)
        rows = outbox_entries(
            msg,
            event,
            ["zhang", "li"],
            channels,
            silence_id=None,
            grafana=True,
            ack_link=lambda t: signer.ack_url(ALERT.alert_id, t, NOW),
        )
        links = {r.target: r.payload["ack_url"] for r in rows}
        assert links["grafana"] is None
        if not expect_links:
            assert set(links.values()) == {None}
            continue
        for target in ("zhang", "li"):
            url = links[target]
            assert url.startswith("http://desk.local:9643/console/ack/")
            claims = verify(KEY, url.rsplit("/", 1)[1], "ack", NOW)
            assert (claims.subject, claims.recipient) == (str(ALERT.alert_id), target)


def test_the_old_ack_url_template_keeps_working_and_may_carry_the_token() -> None:
    signer = LinkSigner("http://x", 600, "https://oncall.example/alerts/{alert_id}/ack")
    signer.key = KEY
    assert signer.ack_url(12, "zhang", NOW) == "https://oncall.example/alerts/12/ack"
    signer.template = "https://desk.example/a/{alert_id}?t={token}"
    url = signer.ack_url(12, "zhang", NOW)
    assert url is not None
    assert url.startswith("https://desk.example/a/12?t=")
    assert verify(KEY, url.split("t=", 1)[1], "ack", NOW).recipient == "zhang"
    signer.key = None
    assert signer.ack_url(12, "zhang", NOW) is None


def test_console_settings_refuse_a_short_secret_and_never_print_it() -> None:
    with pytest.raises(ValidationError):
        ConsoleSettings(signing_key="short")
    with pytest.raises(ValidationError):
        ConsoleSettings(public_url="desk.local")
    secret = "s" * 40
    s = Settings(console={"signing_key": secret, "public_url": "https://desk.example/"})
    assert secret not in repr(s)
    assert secret not in s.model_dump_json()
    assert s.console.public_url == "https://desk.example"
