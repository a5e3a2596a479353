"""Notifiers against real receivers: HTTP servers, an SMTP server and Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import aiomqtt
import httpx
import pytest

from alerts import (
    AlertMessage,
    DingTalkNotifier,
    EmailNotifier,
    MqttNotifier,
    NotifyFailed,
    NotifyRejected,
    WebhookNotifier,
    WeComNotifier,
    dingtalk_sign,
    render_markdown,
)
from core.settings import AlertsSettings, NotifierTarget
from ghgwatch.embedded import ManagedProcess
from tests.alerts.conftest import Captured, Mailbox, Receiver, wait_until

MSG = AlertMessage(
    alert_id=12,
    event="opened",
    idempotency_key="alert-12/opened/t",
    severity="critical",
    rule="mine_power_cut",
    network="im",
    site="shendong-3",
    kind="mine",
    device_id="im/shendong-3/t1-04",
    metric="ch4_pct_vol",
    detector="power_cut",
    value=1.62,
    threshold=1.5,
    location="T1",
    started_at=datetime(2026, 11, 25, 2, 30, 5, tzinfo=UTC),
    at=datetime(2026, 11, 25, 2, 30, 6, tzinfo=UTC),
    devices=3,
    detections=4,
    link="http://grafana.local/d/ghgwatch-mine?var-site=shendong-3",
)
CFG = AlertsSettings(send_timeout_s=5.0)
SECRET = "SECtest0123456789abcdef"


def dingtalk_responder(secret: str) -> Callable[[Captured], tuple[int, Any]]:
    """Answer like DingTalk: verify timestamp + sign, errcode 310000 when wrong."""

    def respond(req: Captured) -> tuple[int, Any]:
        ts = req.query.get("timestamp", [""])[0]
        sign = req.query.get("sign", [""])[0]  # parse_qs has URL-decoded it once
        mac = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
        if sign != base64.b64encode(mac).decode():
            return 200, {"errcode": 310000, "errmsg": "sign not match"}
        return 200, {"errcode": 0, "errmsg": "ok"}

    return respond


async def test_dingtalk_robot_gets_a_signed_markdown_message(receiver: Receiver) -> None:
    """DingTalk: timestamp and HMAC-SHA256 sign in the query, markdown body, errcode 0."""
    receiver.responder = dingtalk_responder(SECRET)
    target = NotifierTarget(
        name="dt", type="dingtalk", url=receiver.url("/robot/send?access_token=abc"), secret=SECRET
    )
    async with httpx.AsyncClient() as client:
        result = await DingTalkNotifier(target, client, "Asia/Shanghai").send(MSG, None)
    assert '"errcode": 0' in result.response
    (req,) = receiver.got("/robot/send")
    assert req.query["access_token"] == ["abc"]
    body = req.json()
    assert body["msgtype"] == "markdown"
    assert "严重" in body["markdown"]["title"]
    assert "CRITICAL" in body["markdown"]["title"]
    text = body["markdown"]["text"]
    assert "1.62 % vol" in text
    assert "1.5 % vol" in text
    assert "2026-11-25 10:30:05 北京时间" in text
    assert "2026-11-25 02:30:05 UTC" in text
    assert "http://grafana.local/d/ghgwatch-mine" in text


async def test_dingtalk_wrong_secret_is_rejected_for_good(receiver: Receiver) -> None:
    """A signature DingTalk refuses (errcode 310000) is permanent: no retry."""
    receiver.responder = dingtalk_responder(SECRET)
    target = NotifierTarget(
        name="dt", type="dingtalk", url=receiver.url("/robot/send?access_token=abc"), secret="x"
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(NotifyRejected, match="310000"):
            await DingTalkNotifier(target, client, "Asia/Shanghai").send(MSG, None)


def test_dingtalk_sign_matches_the_documented_scheme() -> None:
    """sign = urlencode(base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret)))."""
    mac = hmac.new(b"SEC1", b"1700000000000\nSEC1", hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode().replace("+", "%2B").replace("/", "%2F")
    assert dingtalk_sign("SEC1", 1700000000000) == expected.replace("=", "%3D")


async def test_wecom_robot_gets_markdown(receiver: Receiver) -> None:
    """WeCom: msgtype markdown with the phone-readable content."""
    receiver.responder = lambda req: (200, {"errcode": 0, "errmsg": "ok"})
    target = NotifierTarget(
        name="wc", type="wecom", url=receiver.url("/cgi-bin/webhook/send?key=k1")
    )
    async with httpx.AsyncClient() as client:
        await WeComNotifier(target, client, "Asia/Shanghai").send(MSG, None)
    (req,) = receiver.got("/cgi-bin/webhook/send")
    assert req.query["key"] == ["k1"]
    body = req.json()
    assert body == {"msgtype": "markdown", "markdown": {"content": render_markdown(MSG)}}
    assert "im/shendong-3/t1-04 [T1]" in body["markdown"]["content"]


async def test_wecom_rate_limit_is_retryable(receiver: Receiver) -> None:
    """WeCom errcode 45009 (frequency limit) means try again later."""
    receiver.responder = lambda req: (200, {"errcode": 45009, "errmsg": "freq out of limit"})
    target = NotifierTarget(name="wc", type="wecom", url=receiver.url("/w"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(NotifyFailed) as info:
            await WeComNotifier(target, client, "Asia/Shanghai").send(MSG, None)
    assert not isinstance(info.value, NotifyRejected)


async def test_webhook_posts_json_with_idempotency_key_and_signature(receiver: Receiver) -> None:
    """Webhook: JSON body with the alert, Idempotency-Key header, HMAC signature over the body."""
    target = NotifierTarget(name="wh", type="webhook", url=receiver.url("/hook"), secret="k")
    async with httpx.AsyncClient() as client:
        await WebhookNotifier(target, client, "Asia/Shanghai").send(MSG, None)
    (req,) = receiver.got("/hook")
    assert req.headers["idempotency-key"] == MSG.idempotency_key
    ts = req.headers["x-ghgwatch-timestamp"]
    mac = hmac.new(b"k", ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-ghgwatch-signature"] == f"sha256={mac}"
    body = req.json()
    assert body["idempotency_key"] == MSG.idempotency_key
    assert body["alert"]["device_id"] == "im/shendong-3/t1-04"
    assert body["alert"]["threshold"] == 1.5


@pytest.mark.parametrize(
    ("status", "error"), [(500, NotifyFailed), (429, NotifyFailed), (404, NotifyRejected)]
)
async def test_webhook_errors_are_classified(
    receiver: Receiver, status: int, error: type[Exception]
) -> None:
    """5xx and 429 are retried later; other 4xx are permanent."""
    receiver.responder = lambda req: (status, {"error": "x"})
    target = NotifierTarget(name="wh", type="webhook", url=receiver.url("/hook"))
    async with httpx.AsyncClient() as client:
        with pytest.raises(error) as info:
            await WebhookNotifier(target, client, "Asia/Shanghai").send(MSG, None)
    assert (status == 404) == isinstance(info.value, NotifyRejected)


async def test_webhook_unreachable_is_retryable() -> None:
    """A refused connection is a transient failure."""
    target = NotifierTarget(name="wh", type="webhook", url="http://127.0.0.1:9/hook")
    async with httpx.AsyncClient() as client:
        with pytest.raises(NotifyFailed):
            await WebhookNotifier(target, client, "Asia/Shanghai").send(MSG, None)


async def test_email_reaches_a_real_smtp_server(smtp_server: Mailbox) -> None:
    """E-mail: subject is the title, body in Chinese and English, Message-ID from the key."""
    cfg = AlertsSettings(smtp_port=smtp_server.port, smtp_from="alerts@ghgwatch.test")
    target = NotifierTarget(name="mail", type="email", email_to=("oncall@mine.test",))
    await EmailNotifier(target, cfg).send(MSG, None)
    (mail_from, rcpts, raw) = smtp_server.messages[0]
    assert mail_from == "alerts@ghgwatch.test"
    assert rcpts == ["oncall@mine.test"]
    mail: Message = message_from_bytes(raw)
    subject = str(mail["Subject"])
    from email.header import decode_header, make_header

    subject = str(make_header(decode_header(subject)))
    assert "CRITICAL" in subject
    assert "严重" in subject
    assert mail["X-Ghgwatch-Idempotency-Key"] == MSG.idempotency_key
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode(mail.get_content_charset() or "utf-8")
    assert "Reading" in body
    assert "读数" in body
    assert "1.62 % vol" in body


async def test_email_to_a_closed_port_is_retryable() -> None:
    """No SMTP server listening: a transient failure."""
    cfg = AlertsSettings(smtp_port=9, send_timeout_s=2.0)
    target = NotifierTarget(name="mail", type="email", email_to=("a@b.test",))
    with pytest.raises(NotifyFailed):
        await EmailNotifier(target, cfg).send(MSG, None)


async def test_mqtt_alert_reaches_a_site_siren_subscriber(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
) -> None:
    """MQTT: the alert is published QoS 1 on {root}/{network}/{site} with siren=true."""
    broker = await own_mosquitto()
    target = NotifierTarget(name="siren", type="mqtt", url=f"mqtt://127.0.0.1:{broker.port}")
    notifier = MqttNotifier(target, AlertsSettings(mqtt_topic_root="t/alerts"), "mqtt://x:1")
    got: list[dict[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
        await sub.subscribe("t/alerts/im/shendong-3", qos=1)

        async def listen() -> None:
            async for m in sub.messages:
                assert isinstance(m.payload, bytes)
                got.append(json.loads(m.payload))
                return

        task = asyncio.create_task(listen())
        try:
            await notifier.send(MSG, None)
            await notifier.send(MSG.model_copy(update={"event": "resolved"}), None)
            async with asyncio.timeout(10):
                await task
        finally:
            task.cancel()
            await notifier.aclose()
    assert got[0]["siren"] is True
    assert got[0]["idempotency_key"] == MSG.idempotency_key
    assert got[0]["device_id"] == "im/shendong-3/t1-04"


async def test_mqtt_notifier_reconnects_after_a_broker_restart(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
) -> None:
    """A broker restart fails one send (retryable); the next send reconnects and succeeds."""
    broker = await own_mosquitto()
    target = NotifierTarget(name="siren", type="mqtt", url=f"mqtt://127.0.0.1:{broker.port}")
    notifier = MqttNotifier(target, AlertsSettings(send_timeout_s=3.0), "mqtt://x:1")
    try:
        await notifier.send(MSG, None)
        await broker.stop()
        with pytest.raises(NotifyFailed):
            await notifier.send(MSG, None)
        await own_mosquitto(port=broker.port)

        async def sent() -> bool:
            try:
                await notifier.send(MSG, None)
            except NotifyFailed:
                return False
            return True

        await wait_until(sent, "send after restart")
    finally:
        await notifier.aclose()
