"""pydantic models at the alert boundaries: what the store returns and the API speaks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AckRequest",
    "AlertDetail",
    "AlertEventView",
    "AlertFilter",
    "AlertView",
    "AttemptView",
    "DetectionView",
    "NotificationView",
    "ResolveRequest",
    "SilenceAlertRequest",
    "SilenceRequest",
    "SilenceView",
]

AlertState = Literal["open", "acknowledged", "resolved"]
SeverityName = Literal["info", "maintenance", "warning", "critical"]

MAX_SILENCE_S = 30 * 24 * 3600.0
NAME_MAX_CHARS = 200
NOTE_MAX_CHARS = 2000
# PostgreSQL text cannot hold NUL; the schema says so, so generated clients know it.
NO_NUL_PATTERN = r"^[^\x00]*$"


def _storable(text: str) -> str:
    """Refuse text PostgreSQL cannot store as UTF-8 (a lone surrogate from a JSON escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


NameText = Annotated[
    str, Field(max_length=NAME_MAX_CHARS, pattern=NO_NUL_PATTERN), AfterValidator(_storable)
]
NoteText = Annotated[
    str, Field(max_length=NOTE_MAX_CHARS, pattern=NO_NUL_PATTERN), AfterValidator(_storable)
]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertView(_View):
    """One alert as stored: what, where, how severe, and where it is in its lifecycle."""

    alert_id: int
    group_key: str
    rule: str
    severity: SeverityName
    state: AlertState
    condition_active: bool
    network: str
    site: str
    kind: str
    device_id: str
    metric: str
    detector: str
    value: float
    threshold: float | None
    location: str | None
    started_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolve_due_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    escalation_level: int
    next_escalation_at: datetime | None
    silenced_until: datetime | None
    created_at: datetime
    updated_at: datetime


class AlertEventView(_View):
    """One entry of an alert's history (state change, acknowledgement, suppression...)."""

    event_id: int
    at: datetime
    event: str
    actor: str
    detail: dict[str, Any]


class AttemptView(_View):
    """One attempt to send a notification and its result."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    ok: bool
    error: str | None
    response: str | None


class NotificationView(_View):
    """One queued notification (an outbox row) with every attempt made."""

    outbox_id: int
    idempotency_key: str
    event: str
    target: str
    channel: str
    status: Literal["pending", "sending", "sent", "failed", "suppressed", "unknown"]
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None
    history: list[AttemptView] = Field(default_factory=list)


class DetectionView(_View):
    """A detection that belongs to the alert."""

    detection_id: str
    device_id: str
    metric: str
    detector: str
    severity: str
    state: Literal["open", "cleared"]
    started_at: datetime
    ended_at: datetime | None
    value: float
    threshold: float | None


class AlertDetail(_View):
    """An alert with its detections, history and notifications."""

    alert: AlertView
    detections: list[DetectionView]
    events: list[AlertEventView]
    notifications: list[NotificationView]


class SilenceView(_View):
    """A silence or maintenance window: matching alerts are recorded but nobody is told."""

    silence_id: int
    kind: Literal["silence", "maintenance"]
    network: str | None
    site: str | None
    device_id: str | None
    group: str | None
    alert_id: int | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


class AlertFilter(_View):
    """Filters for listing alerts; None matches anything."""

    state: AlertState | None = None
    active: bool | None = Field(default=None, description="True: open or acknowledged")
    severity: SeverityName | None = None
    network: str | None = None
    site: str | None = None
    kind: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class AckRequest(_View):
    """Acknowledge an alert: stops its escalation."""

    by: NameText | None = Field(default=None, description="Person; default: token")
    note: NoteText | None = None


class ResolveRequest(_View):
    """Resolve an alert by hand."""

    by: NameText | None = None
    note: NoteText | None = None


class SilenceAlertRequest(_View):
    """Silence an alert (and its site's group) for a while."""

    by: NameText | None = None
    duration_s: float | None = Field(default=None, gt=0, le=MAX_SILENCE_S)
    reason: NoteText = "silenced by on-call"


class SilenceRequest(_View):
    """Create a silence or maintenance window (e.g. a mine sensor calibration)."""

    # The schema states what the validator below enforces: at least one scope given.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("network", "site", "device_id", "group")
            ]
        }
    )

    kind: Literal["silence", "maintenance"] = "maintenance"
    network: NameText | None = None
    site: NameText | None = None
    device_id: NameText | None = None
    group: NameText | None = None
    starts_at: datetime | None = Field(default=None, description="Default: now")
    ends_at: datetime = Field(description="After starts_at (or now)")
    reason: NoteText = Field(min_length=1)
    by: NameText | None = None

    @model_validator(mode="after")
    def _check(self) -> SilenceRequest:
        if self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at.tzinfo is None or (self.starts_at and self.starts_at.tzinfo is None):
            raise ValueError("times must carry a time zone (e.g. 2026-01-01T08:00:00+08:00)")
        if not any((self.network, self.site, self.device_id, self.group)):
            raise ValueError("give at least one of network, site, device_id, group")
        return self
