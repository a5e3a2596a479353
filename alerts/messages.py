"""Pure message building: the notification snapshot and its phone-readable zh/en renderings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from wire.detectors import detector_spec

__all__ = [
    "AlertMessage",
    "Language",
    "grafana_link",
    "render_markdown",
    "render_text",
    "render_title",
]

Language = Literal["zh", "en", "both"]

LINK_LEAD = timedelta(hours=1)  # the Grafana link shows an hour before the alert started
LINK_TAIL = timedelta(hours=1)

_SEVERITY_ZH = {"critical": "严重", "warning": "警告", "maintenance": "维护", "info": "提示"}
_SEVERITY_ICON = {"critical": "🔴", "warning": "🟠", "maintenance": "🔧", "info": "ℹ️"}
_EVENT_ZH = {
    "opened": "新告警",
    "severity_raised": "级别升高",
    "escalated": "未确认升级",
    "resolved": "已恢复",
}
_EVENT_EN = {
    "opened": "New alert",
    "severity_raised": "Severity raised",
    "escalated": "Not acknowledged - escalated",
    "resolved": "Resolved",
}
_KIND_ZH = {"mine": "煤矿", "city": "城市站", "cems": "电厂CEMS", "leak": "油气泄漏监测"}
_UNIT_SUFFIXES = (
    ("_pct_vol", "% vol"),
    ("_ppm", "ppm"),
    ("_ppb", "ppb"),
    ("_t_h", "t/h"),
    ("_g_kwh", "g/kWh"),
    ("_mw", "MW"),
    ("_m3_h", "m³/h"),
    ("_m_s", "m/s"),
    ("_c", "°C"),
)


class AlertMessage(BaseModel):
    """Everything a notifier needs, snapshotted when the notification is queued.

    The outbox stores this as JSON, so a notification sent after a restart says exactly what
    it would have said before the crash.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: int
    event: Literal["opened", "severity_raised", "escalated", "resolved"]
    idempotency_key: str = ""
    level: int = 0
    severity: str
    rule: str
    network: str
    site: str
    kind: str
    device_id: str
    metric: str
    detector: str
    value: float
    threshold: float | None = None
    location: str | None = None
    started_at: datetime
    at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    detections: int = 1
    devices: int = 1
    link: str | None = None
    ack_url: str | None = None

    @property
    def unit(self) -> str:
        """The reading's unit, read from the metric name's suffix (``ch4_pct_vol`` -> % vol)."""
        return next((u for s, u in _UNIT_SUFFIXES if self.metric.endswith(s)), "")


def grafana_link(
    base_url: str | None,
    dashboards: dict[str, str],
    *,
    kind: str,
    network: str,
    site: str,
    device_id: str,
    started_at: datetime,
    ended_at: datetime | None = None,
) -> str | None:
    """Link to the Grafana dashboard of the alert's kind, filtered to its site and time.

    Args:
        base_url: Grafana base URL; None gives None.
        dashboards: dashboard uid per source kind.
        kind: source kind of the alert.
        network: network variable.
        site: site variable.
        device_id: device variable.
        started_at: start of the alert.
        ended_at: end of the alert, if known.

    Returns:
        The URL, or None when no Grafana is configured.
    """
    if not base_url:
        return None
    base = base_url.rstrip("/")
    uid = dashboards.get(kind)
    if uid is None:
        return f"{base}/dashboards?{urlencode({'query': 'ghgwatch'})}"
    end = (ended_at or started_at) + LINK_TAIL
    query = urlencode(
        {
            "var-network": network,
            "var-site": site,
            "var-device": device_id,
            "from": int((started_at - LINK_LEAD).timestamp() * 1000),
            "to": int(end.timestamp() * 1000),
        }
    )
    return f"{base}/d/{uid}?{query}"


def _times(at: datetime, tz: str) -> tuple[str, str]:
    local = at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
    utc = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return local, utc


def _reading(msg: AlertMessage) -> str:
    unit = f" {msg.unit}" if msg.unit else ""
    text = f"{msg.value:.4g}{unit}"
    return text


def render_title(msg: AlertMessage, lang: Language = "both") -> str:
    """One-line title, e.g. ``🔴 [严重 CRITICAL] 新告警 New alert #12 mine-a/site-3``."""
    sev_zh = _SEVERITY_ZH.get(msg.severity, msg.severity)
    sev_en = msg.severity.upper()
    ev_zh = _EVENT_ZH[msg.event]
    ev_en = _EVENT_EN[msg.event]
    if msg.event == "escalated":
        ev_zh = f"{ev_zh}({msg.level})"
        ev_en = f"{ev_en} ({msg.level})"
    icon = "✅" if msg.event == "resolved" else _SEVERITY_ICON.get(msg.severity, "")
    if lang == "zh":
        head = f"[{sev_zh}] {ev_zh}"
    elif lang == "en":
        head = f"[{sev_en}] {ev_en}"
    else:
        head = f"[{sev_zh} {sev_en}] {ev_zh} {ev_en}"
    return f"{icon} {head} #{msg.alert_id} {msg.network}/{msg.site}".strip()


def _lines(msg: AlertMessage, lang: Language, tz: str) -> list[tuple[str, str, str]]:
    """(zh label, en label, value) rows shared by the text and markdown renderings."""
    local, utc = _times(msg.started_at, tz)
    kind_zh = _KIND_ZH.get(msg.kind, msg.kind)
    spec = detector_spec(msg.detector)
    # labels from the detector catalogue; a name it lacks (an older record) is shown as is
    det_zh = spec.label_zh if spec else msg.detector
    det_en = spec.label_en if spec else msg.detector
    detector = {"zh": det_zh, "en": det_en}.get(lang, f"{det_zh} {msg.detector}")
    kind = {"zh": kind_zh, "en": msg.kind}.get(lang, f"{kind_zh} {msg.kind}")
    reading = _reading(msg)
    if msg.threshold is not None:
        thr = f"{msg.threshold:.4g}{' ' + msg.unit if msg.unit else ''}"
        reading = f"{reading} ({_label('阈值', 'threshold', lang)} {thr})"
    device = msg.device_id + (f" [{msg.location}]" if msg.location else "")
    if msg.devices > 1:
        more = msg.devices - 1
        device += {"zh": f" 等{msg.devices}台", "en": f" +{more} more"}.get(
            lang, f" 等{msg.devices}台 (+{more} more)"
        )
    rows = [
        ("站点", "Site", f"{kind} {msg.network}/{msg.site}"),
        ("设备", "Device", device),
        ("检测", "Detector", f"{detector} ({msg.metric})"),
        ("读数", "Reading", reading),
        ("开始时间", "Started", f"{local} 北京时间 / {utc} UTC"),
    ]
    if msg.event == "resolved" and msg.resolved_at is not None:
        r_local, r_utc = _times(msg.resolved_at, tz)
        by = f" ({msg.resolved_by})" if msg.resolved_by else ""
        rows.append(("恢复时间", "Resolved", f"{r_local} 北京时间 / {r_utc} UTC{by}"))
    return rows


def _label(zh: str, en: str, lang: Language) -> str:
    return {"zh": zh, "en": en}.get(lang, f"{zh} {en}")


def render_text(msg: AlertMessage, lang: Language = "both", tz: str = "Asia/Shanghai") -> str:
    """Plain-text body (e-mail, MQTT displays, webhooks), one fact per line.

    Args:
        msg: the notification snapshot.
        lang: zh, en or both.
        tz: local time zone shown next to UTC.

    Returns:
        The text, title first.
    """
    out = [render_title(msg, lang)]
    out += [f"{_label(zh, en, lang)}: {value}" for zh, en, value in _lines(msg, lang, tz)]
    if msg.link:
        out.append(f"{_label('面板', 'Panel', lang)}: {msg.link}")
    if msg.ack_url:
        out.append(f"{_label('确认', 'Acknowledge', lang)}: {msg.ack_url}")
    return "\n".join(out)


def render_markdown(msg: AlertMessage, lang: Language = "both", tz: str = "Asia/Shanghai") -> str:
    """Markdown body for DingTalk and WeCom group robots (short lines for a phone screen).

    Args:
        msg: the notification snapshot.
        lang: zh, en or both.
        tz: local time zone shown next to UTC.

    Returns:
        The markdown text, title as a heading.
    """
    out = [f"### {render_title(msg, lang)}"]
    out += [f"- **{_label(zh, en, lang)}**: {value}" for zh, en, value in _lines(msg, lang, tz)]
    if msg.link:
        out.append(f"- [{_label('Grafana 面板', 'Grafana panel', lang)}]({msg.link})")
    if msg.ack_url:
        out.append(f"- [{_label('确认告警', 'Acknowledge', lang)}]({msg.ack_url})")
    return "\n".join(out)
