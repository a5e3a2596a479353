"""Notifier adapters: webhook, DingTalk and WeCom robots, SMTP e-mail and an MQTT alert topic.

Each notifier sends one rendered notification and either returns the receiver's answer or
raises :class:`NotifyFailed` (retry later) / :class:`NotifyRejected` (never retry). Retries and
backoff are the dispatcher's job, driven by the outbox. httpx, smtplib and aiomqtt errors are
mapped here and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import aiomqtt
import httpx
import structlog
from aiomqtt.exceptions import MqttConnectError

from alerts.exceptions import NotifyFailed, NotifyRejected
from alerts.messages import AlertMessage, render_markdown, render_text, render_title
from core.errors import ConfigurationError
from core.settings import AlertsSettings, NotifierTarget

__all__ = [
    "NO_DEDUP_CHANNELS",
    "DingTalkNotifier",
    "EmailNotifier",
    "MqttNotifier",
    "Notifier",
    "SendResult",
    "WeComNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "dingtalk_sign",
]

log = structlog.get_logger(__name__)

RESPONSE_EXCERPT_CHARS = 300
WECOM_MARKDOWN_MAX_BYTES = 4096  # WeCom refuses longer markdown content
DEFAULT_RETRY_AFTER_S = 2.0
MQTT_CONNECT_TIMEOUT_S = 10.0
# CONNACK codes that retrying cannot fix: MQTT 3.1.1 bad username or password (4), not
# authorised (5); MQTT 5 bad user name or password (134), not authorised (135).
MQTT_REFUSED_FOR_GOOD = (4, 5, 134, 135)
# DingTalk errcodes worth retrying: -1 system busy, 130101 sending too fast (20/min per robot)
_DINGTALK_RETRY = {-1, 130101}
# WeCom errcodes worth retrying: -1 system busy, 45009 frequency limit
_WECOM_RETRY = {-1, 45009}
# Notifier types whose receivers cannot de-duplicate on the idempotency key: DingTalk and WeCom
# group robots show every POST. An attempt interrupted after its send began is not sent to
# them again (it could page twice) but recorded as ``unknown`` for a human to check. Every
# other type is re-sent: webhooks carry the ``Idempotency-Key`` header, e-mail its
# ``Message-ID``, MQTT (QoS 1, itself at-least-once) and Grafana the key in the payload.
NO_DEDUP_CHANNELS: frozenset[str] = frozenset({"dingtalk", "wecom"})


@dataclass(frozen=True, slots=True)
class SendResult:
    """A delivered notification: the receiver's answer (truncated) and, for Grafana, the
    annotation id it created."""

    response: str
    annotation_id: int | None = None


class Notifier(Protocol):
    """Sends one notification to one configured target."""

    name: str
    channel: str

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """Deliver ``msg``.

        Raises:
            NotifyFailed: may pass; the dispatcher retries with backoff.
            NotifyRejected: the receiver refused it for good.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _retry_after(resp: httpx.Response) -> float:
    try:
        return max(float(resp.headers.get("retry-after", DEFAULT_RETRY_AFTER_S)), 0.0)
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


@contextlib.asynccontextmanager
async def _http_errors(name: str) -> Any:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise NotifyFailed(f"{name}: timeout: {exc}") from exc
    except (httpx.TransportError, OSError) as exc:
        raise NotifyFailed(f"{name}: {type(exc).__name__}: {exc}") from exc


def _check_status(name: str, resp: httpx.Response) -> None:
    if resp.status_code in (408, 425, 429) or resp.status_code >= 500:
        raise NotifyFailed(
            f"{name}: HTTP {resp.status_code}: {resp.text[:RESPONSE_EXCERPT_CHARS]}",
            retry_after=_retry_after(resp),
        )
    if resp.status_code >= 400:
        raise NotifyRejected(
            f"{name}: HTTP {resp.status_code}: {resp.text[:RESPONSE_EXCERPT_CHARS]}"
        )


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signature: HMAC-SHA256 over ``timestamp + "\\n" + secret`` keyed with the
    secret, base64-encoded, then URL-encoded (the value of the ``sign`` query parameter).

    Args:
        secret: the robot's ``SEC...`` secret.
        timestamp_ms: milliseconds since the epoch; DingTalk accepts one hour of skew.

    Returns:
        The URL-encoded signature.
    """
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest))


class _HttpNotifier:
    channel = "webhook"

    def __init__(self, target: NotifierTarget, client: httpx.AsyncClient, tz: str) -> None:
        if not target.url:
            raise ConfigurationError(f"notifier {target.name!r} ({target.type}) needs a url")
        self.name = target.name
        self._target = target
        self._url: str = target.url
        self._client = client
        self._tz = tz

    async def aclose(self) -> None:
        """The shared HTTP client is closed by its owner."""


class WebhookNotifier(_HttpNotifier):
    """POSTs the alert as JSON; with a secret, signs the body (``X-Ghgwatch-Signature``)."""

    channel = "webhook"

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """POST ``{idempotency_key, event, title, text, alert}`` with an Idempotency-Key header."""
        lang = self._target.language
        body = json.dumps(
            {
                "idempotency_key": msg.idempotency_key,
                "event": msg.event,
                "title": render_title(msg, lang),
                "text": render_text(msg, lang, self._tz),
                "alert": msg.model_dump(mode="json"),
            },
            ensure_ascii=False,
        ).encode()
        headers = {"content-type": "application/json", "idempotency-key": msg.idempotency_key}
        if self._target.secret is not None:
            ts = str(int(time.time()))
            mac = hmac.new(
                self._target.secret.get_secret_value().encode(),
                ts.encode() + b"." + body,
                hashlib.sha256,
            ).hexdigest()
            headers["x-ghgwatch-timestamp"] = ts
            headers["x-ghgwatch-signature"] = f"sha256={mac}"
        async with _http_errors(self.name):
            resp = await self._client.post(self._url, content=body, headers=headers)
        _check_status(self.name, resp)
        return SendResult(response=f"HTTP {resp.status_code} {resp.text[:RESPONSE_EXCERPT_CHARS]}")


async def _robot_post(
    name: str, client: httpx.AsyncClient, url: str, payload: dict[str, Any], retry: set[int]
) -> SendResult:
    async with _http_errors(name):
        resp = await client.post(url, json=payload)
    _check_status(name, resp)
    try:
        answer = resp.json()
        code = int(answer.get("errcode", 0))
    except (ValueError, AttributeError, TypeError) as exc:
        raise NotifyFailed(
            f"{name}: unreadable answer {resp.text[:RESPONSE_EXCERPT_CHARS]!r}"
        ) from exc
    text = resp.text[:RESPONSE_EXCERPT_CHARS]
    if code in retry:
        raise NotifyFailed(f"{name}: errcode {code}: {text}", retry_after=DEFAULT_RETRY_AFTER_S)
    if code != 0:
        raise NotifyRejected(f"{name}: errcode {code}: {text}")
    return SendResult(response=text)


class DingTalkNotifier(_HttpNotifier):
    """DingTalk group robot: markdown message; signed with ``timestamp`` and ``sign`` when the
    robot has a secret."""

    channel = "dingtalk"

    def signed_url(self, timestamp_ms: int | None = None) -> str:
        """The robot URL with ``timestamp`` and ``sign`` appended (unchanged without secret)."""
        if self._target.secret is None:
            return self._url
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        sign = dingtalk_sign(self._target.secret.get_secret_value(), ts)
        sep = "&" if "?" in self._url else "?"
        return f"{self._url}{sep}timestamp={ts}&sign={sign}"

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """POST a markdown message; errcode 0 means delivered."""
        lang = self._target.language
        payload = {
            "msgtype": "markdown",
            "markdown": {
                "title": render_title(msg, lang),
                "text": render_markdown(msg, lang, self._tz),
            },
            "at": {"isAtAll": False},
        }
        return await _robot_post(
            self.name, self._client, self.signed_url(), payload, _DINGTALK_RETRY
        )


class WeComNotifier(_HttpNotifier):
    """WeCom (企业微信) group robot: ``msgtype: markdown``."""

    channel = "wecom"

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """POST a markdown message (cut to WeCom's 4096-byte limit); errcode 0 means delivered."""
        content = render_markdown(msg, self._target.language, self._tz)
        raw = content.encode()
        if len(raw) > WECOM_MARKDOWN_MAX_BYTES:
            content = raw[: WECOM_MARKDOWN_MAX_BYTES - 3].decode(errors="ignore") + "..."
        payload = {"msgtype": "markdown", "markdown": {"content": content}}
        return await _robot_post(self.name, self._client, self._url, payload, _WECOM_RETRY)


class EmailNotifier:
    """Plain-text e-mail over SMTP (stdlib smtplib in a worker thread)."""

    channel = "email"

    def __init__(self, target: NotifierTarget, cfg: AlertsSettings) -> None:
        if not target.email_to:
            raise ConfigurationError(f"notifier {target.name!r} (email) needs email_to")
        self.name = target.name
        self._target = target
        self._cfg = cfg

    def _build(self, msg: AlertMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = render_title(msg, self._target.language)
        mail["From"] = self._cfg.smtp_from
        mail["To"] = ", ".join(self._target.email_to)
        mail["Date"] = formatdate(localtime=False)
        digest = hashlib.sha256(msg.idempotency_key.encode()).hexdigest()[:32]
        mail["Message-ID"] = f"<{digest}@ghgwatch>"
        mail["X-Ghgwatch-Idempotency-Key"] = msg.idempotency_key
        mail.set_content(render_text(msg, self._target.language, self._cfg.timezone))
        return mail

    def _send_blocking(self, mail: EmailMessage) -> str:
        cfg = self._cfg
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.send_timeout_s) as smtp:
            if cfg.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.smtp_username and cfg.smtp_password is not None:
                smtp.login(cfg.smtp_username, cfg.smtp_password.get_secret_value())
            refused = smtp.send_message(mail)
        return f"accepted; refused={sorted(refused)}" if refused else "accepted"

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """Send the mail; recipients refused or bad credentials are permanent failures."""
        mail = self._build(msg)
        try:
            answer = await asyncio.to_thread(self._send_blocking, mail)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPAuthenticationError) as exc:
            raise NotifyRejected(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyFailed(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return SendResult(response=answer)

    async def aclose(self) -> None:
        """Nothing held between sends."""


class MqttNotifier:
    """Publishes alerts (QoS 1) to ``{topic root}/{network}/{site}`` for sirens and displays.

    One connection is kept open and re-made after any failure.
    """

    channel = "mqtt"

    def __init__(self, target: NotifierTarget, cfg: AlertsSettings, default_url: str) -> None:
        url = urllib.parse.urlsplit(target.url or default_url)
        if url.scheme not in ("mqtt", "tcp", "") or not url.hostname:
            raise ConfigurationError(
                f"notifier {target.name!r}: unsupported MQTT URL {url.geturl()}"
            )
        self.name = target.name
        self._host = url.hostname
        self._port = url.port or 1883
        self._username = url.username
        self._password = url.password
        self._root = (target.topic or cfg.mqtt_topic_root).rstrip("/")
        self._tz = cfg.timezone
        self._lang = target.language
        self._timeout_s = cfg.send_timeout_s
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    def topic(self, msg: AlertMessage) -> str:
        """The topic a siren at the alert's site subscribes to."""
        return f"{self._root}/{msg.network}/{msg.site}"

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = aiomqtt.Client(
                self._host,
                self._port,
                username=self._username,
                password=self._password,
                timeout=self._timeout_s,
            )
            async with asyncio.timeout(MQTT_CONNECT_TIMEOUT_S):
                await client.__aenter__()
            self._client = client
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                async with asyncio.timeout(MQTT_CONNECT_TIMEOUT_S):
                    await client.__aexit__(None, None, None)

    async def send(self, msg: AlertMessage, annotation_id: int | None) -> SendResult:
        """Publish a JSON alert and wait for the broker's PUBACK."""
        payload = json.dumps(
            {
                "idempotency_key": msg.idempotency_key,
                "event": msg.event,
                "alert_id": msg.alert_id,
                "severity": msg.severity,
                "siren": msg.event != "resolved" and msg.severity == "critical",
                "network": msg.network,
                "site": msg.site,
                "device_id": msg.device_id,
                "value": msg.value,
                "threshold": msg.threshold,
                "started_at": msg.started_at.isoformat(),
                "title": render_title(msg, self._lang),
                "text": render_text(msg, self._lang, self._tz),
            },
            ensure_ascii=False,
        )
        topic = self.topic(msg)
        async with self._lock:
            try:
                client = await self._connected()
                await client.publish(topic, payload, qos=1, timeout=self._timeout_s)
            except aiomqtt.MqttCodeError as exc:
                await self._drop()
                # Only the broker's CONNACK refusing us is for good (bad credentials, not
                # authorised); the same numbers from a publish mean "not connected" (rc 4
                # is paho's MQTT_ERR_NO_CONN after a broker restart), which passes.
                refused = isinstance(exc, MqttConnectError)
                if refused and exc.rc in MQTT_REFUSED_FOR_GOOD:
                    raise NotifyRejected(f"{self.name}: refused: {exc}") from exc
                raise NotifyFailed(f"{self.name}: {exc}") from exc
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                await self._drop()
                raise NotifyFailed(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return SendResult(response=f"published to {topic}")

    async def aclose(self) -> None:
        """Disconnect."""
        async with self._lock:
            await self._drop()


def build_notifiers(
    cfg: AlertsSettings, client: httpx.AsyncClient, default_mqtt_url: str
) -> dict[str, Notifier]:
    """One notifier per configured target, by name.

    Args:
        cfg: the ``alerts`` settings section.
        client: the shared HTTP client for webhook and robot targets.
        default_mqtt_url: broker for MQTT targets without their own URL.

    Returns:
        name -> notifier.

    Raises:
        ConfigurationError: a target is missing what its type needs, or names repeat.
    """
    out: dict[str, Notifier] = {}
    for t in cfg.notifiers:
        if t.name in out:
            raise ConfigurationError(f"notifier name {t.name!r} is used twice")
        notifier: Notifier
        if t.type == "webhook":
            notifier = WebhookNotifier(t, client, cfg.timezone)
        elif t.type == "dingtalk":
            notifier = DingTalkNotifier(t, client, cfg.timezone)
        elif t.type == "wecom":
            notifier = WeComNotifier(t, client, cfg.timezone)
        elif t.type == "email":
            notifier = EmailNotifier(t, cfg)
        else:
            notifier = MqttNotifier(t, cfg, default_mqtt_url)
        out[t.name] = notifier
    return out
