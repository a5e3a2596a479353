"""Records published for other services: detections (detections topic) and device events.

A device event is something a device said about itself rather than a reading: today its MQTT
last will (``{"status": "offline"}`` on its data topic, docs/wire-contract.md), which the
bridge forwards to the device-events topic instead of rejecting it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "WILL_PAYLOAD",
    "DetectionRecord",
    "DetectionState",
    "DeviceEvent",
    "DeviceEventRecord",
    "Severity",
    "detection_id",
]

# The payload of a device's MQTT last will on its data topic (docs/wire-contract.md).
WILL_PAYLOAD = {"status": "offline"}


class Severity(StrEnum):
    """How urgent a detection is; alert rules map it to notifications."""

    INFO = "info"
    MAINTENANCE = "maintenance"  # sensor faults: a ticket, not a page
    WARNING = "warning"
    CRITICAL = "critical"


class DetectionState(StrEnum):
    """A detection is published when it opens and again when it clears."""

    OPEN = "open"
    CLEARED = "cleared"


def detection_id(device_id: str, metric: str, detector: str, started_at: datetime) -> str:
    """Stable id of one detection event: the same onset always gives the same id."""
    key = f"{device_id}|{metric}|{detector}|{started_at.isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class DetectionRecord(BaseModel):
    """One detection event as stored and as published to Kafka (key: ``device_id``).

    ``detection_id`` is stable across redelivery and replay, so consumers de-duplicate on it;
    the CLEARED record repeats the OPEN record's id with ``ended_at`` set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    detection_id: str
    state: DetectionState
    device_id: str
    kind: str = Field(description="Source kind: city, cems, mine, leak (or generic)")
    network: str
    site: str
    metric: str
    detector: str = Field(
        description="A name from wire.detectors, e.g. threshold_alarm, release, spike"
    )
    severity: Severity
    started_at: datetime
    ended_at: datetime | None = None
    score: float
    value: float = Field(description="The reading (or derived value) that triggered it")
    threshold: float | None = None
    location: str | None = None
    evidence: dict[str, float] = Field(default_factory=dict)


class DeviceEvent(StrEnum):
    """What a device said about itself."""

    OFFLINE = "offline"  # its MQTT last will: the connection dropped without a DISCONNECT


class DeviceEventRecord(BaseModel):
    """One device event as published to the device-events topic (key: ``device_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    device_id: str
    kind: str
    network: str
    site: str
    event: DeviceEvent
    received_at: datetime
    mqtt_topic: str
