"""Alerts: detections become alerts, alerts reach on-call staff exactly once, staff answer.

Public surface: :class:`AlertService` (Kafka detections -> PostgreSQL alerts + outbox ->
notifiers), :class:`AlertApi` / :func:`create_app` (the on-call HTTP API), :class:`AlertStore`
(used by the CLI), the notifiers and the pure rule and message functions.

Inside, each module has one job: pure decisions in ``rules`` (which alert, how severe, who
hears), ``lifecycle`` (open, join, escalate, resolve, silence) and ``notices`` (the outbox
rows announcing a change, with their messages from ``messages``); every SQL statement in
``writes`` (state changes and history), ``outbox`` (the notification queue) and ``reads``
(the API's and console's queries), over the pool in ``pg``; ``store`` opens them together.
"""

from alerts.api import AlertApi, create_app
from alerts.console import AlertConsole, format_alert_line, format_detail
from alerts.dispatcher import Dispatcher, DispatchStats, backoff_s
from alerts.exceptions import (
    AlertError,
    AlertNotFound,
    InvalidTransition,
    NotifyFailed,
    NotifyRejected,
)
from alerts.grafana import GrafanaAnnotator, annotation_tags
from alerts.messages import AlertMessage, grafana_link, render_markdown, render_text, render_title
from alerts.metrics import AlertMetrics
from alerts.models import (
    AckRequest,
    AlertDetail,
    AlertEventView,
    AlertFilter,
    AlertView,
    AttemptView,
    DetectionView,
    NotificationView,
    ResolveRequest,
    SilenceAlertRequest,
    SilenceRequest,
    SilenceView,
)
from alerts.notifiers import (
    DingTalkNotifier,
    EmailNotifier,
    MqttNotifier,
    Notifier,
    SendResult,
    WebhookNotifier,
    WeComNotifier,
    build_notifiers,
    dingtalk_sign,
)
from alerts.rules import SEVERITY_RANK, AlertDecision, classify, escalation_targets, route_targets
from alerts.service import AlertService, ServiceStats, decode_detections
from alerts.store import AlertStore, ApplyResult, OutboxItem, SweepResult, db_errors

__all__ = [
    "SEVERITY_RANK",
    "AckRequest",
    "AlertApi",
    "AlertConsole",
    "AlertDecision",
    "AlertDetail",
    "AlertError",
    "AlertEventView",
    "AlertFilter",
    "AlertMessage",
    "AlertMetrics",
    "AlertNotFound",
    "AlertService",
    "AlertStore",
    "AlertView",
    "ApplyResult",
    "AttemptView",
    "DetectionView",
    "DingTalkNotifier",
    "DispatchStats",
    "Dispatcher",
    "EmailNotifier",
    "GrafanaAnnotator",
    "InvalidTransition",
    "MqttNotifier",
    "NotificationView",
    "Notifier",
    "NotifyFailed",
    "NotifyRejected",
    "OutboxItem",
    "ResolveRequest",
    "SendResult",
    "ServiceStats",
    "SilenceAlertRequest",
    "SilenceRequest",
    "SilenceView",
    "SweepResult",
    "WeComNotifier",
    "WebhookNotifier",
    "annotation_tags",
    "backoff_s",
    "build_notifiers",
    "classify",
    "create_app",
    "db_errors",
    "decode_detections",
    "dingtalk_sign",
    "escalation_targets",
    "format_alert_line",
    "format_detail",
    "grafana_link",
    "render_markdown",
    "render_text",
    "render_title",
    "route_targets",
]
