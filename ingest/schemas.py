"""The wire contract: MQTT payloads devices send, and the records ghgwatch puts on Kafka.

A device publishes JSON on its data topic (see :mod:`ingest.topics`), either one reading::

    {"ts": "2026-11-25T08:00:05+08:00", "metric": "co2_ppm", "value": 431.2, "flag": "N"}

or a batch, as a data logger or mine gateway sends all its channels at once::

    {"ts": "2026-11-25T08:00:05+08:00", "flag": "N",
     "readings": [{"metric": "co2_pct_vol", "value": 11.8},
                  {"metric": "flow_m3_h", "value": 1.52e6, "ts": "2026-11-25T08:00:04+08:00"}]}

``ts`` is the device's measurement time and must carry a UTC offset (or be epoch seconds);
items of a batch inherit ``ts``, ``flag`` and ``location`` from the envelope. ``flag`` is the
HJ 212-2017 data flag (N normal, F stopped, M maintenance, S manual, D fault, C calibration,
T over limit, B communication fault); flagged readings are stored but kept out of detection.
Mine sensors also name their ``location`` class, which sets their alarm thresholds.

:func:`validate_message` turns (topic, payload) into an :class:`AcceptedMessage` or a
:class:`RejectedMessage` with a reason code; it never raises on bad input.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

if TYPE_CHECKING:
    from ingest.topics import DeviceRef

__all__ = [
    "MAX_FUTURE_SKEW",
    "MAX_PAYLOAD_BYTES",
    "METRICS",
    "AcceptedMessage",
    "BatchPayload",
    "DeadLetterRecord",
    "DeviceStatus",
    "Flag",
    "MetricSpec",
    "MineLocation",
    "ReadingItem",
    "ReadingRecord",
    "RejectReason",
    "RejectedMessage",
    "SinglePayload",
    "SourceKind",
    "WireReading",
    "validate_message",
]

MAX_PAYLOAD_BYTES = 256 * 1024
# A device clock this far ahead of ours is wrong; late data of any age is accepted.
MAX_FUTURE_SKEW = timedelta(minutes=10)
MAX_BATCH_READINGS = 10_000
_EXCERPT_CHARS = 200


class SourceKind(StrEnum):
    """The kind of source a device belongs to; it decides the metrics it may send."""

    CITY = "city"
    CEMS = "cems"
    MINE = "mine"
    LEAK = "leak"


class Flag(StrEnum):
    """HJ 212-2017 data flags, carried as the reading's quality flag."""

    NORMAL = "N"
    STOPPED = "F"
    MAINTENANCE = "M"
    MANUAL = "S"
    FAULT = "D"
    CALIBRATION = "C"
    OVER_LIMIT = "T"
    COMM_FAULT = "B"


class MineLocation(StrEnum):
    """Coal-mine CH4 sensor location classes (Coal Mine Safety Regulations 2022, AQ 1029)."""

    UPPER_CORNER = "T0"
    WORKING_FACE = "T1"
    FACE_RETURN = "T2"
    INTAKE_HIGH_GAS = "T3"
    DRAINAGE = "T7"
    MAIN_RETURN = "main_return"
    WING_RETURN = "wing_return"
    OTHER = "other"


class RejectReason(StrEnum):
    """Why a message was dead-lettered; devices see this code on their status topic."""

    BAD_TOPIC = "bad_topic"
    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    SCHEMA = "schema"
    UNKNOWN_METRIC = "unknown_metric"
    WRONG_KIND = "metric_not_for_kind"
    OUT_OF_RANGE = "out_of_range"
    FUTURE_TIMESTAMP = "future_timestamp"
    MISSING_LOCATION = "missing_location"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's unit, the source kinds that may send it and its physically possible range."""

    unit: str
    kinds: frozenset[SourceKind]
    min_value: float
    max_value: float
    description: str


_C, _E, _M, _L = SourceKind.CITY, SourceKind.CEMS, SourceKind.MINE, SourceKind.LEAK


def _spec(unit: str, kinds: set[SourceKind], lo: float, hi: float, text: str) -> MetricSpec:
    return MetricSpec(unit, frozenset(kinds), lo, hi, text)


# Ranges are hard physical limits used to reject garbage; plausibility is detection's job.
METRICS: dict[str, MetricSpec] = {
    "co2_ppm": _spec("ppm", {_C}, -50, 100_000, "CO2 dry mole fraction"),
    "ch4_ppm": _spec("ppm", {_C, _L}, -50, 1_000_000, "CH4 dry mole fraction / concentration"),
    "ch4_ppb": _spec("ppb", {_C}, -5_000, 1e9, "CH4 dry mole fraction"),
    "wind_speed_m_s": _spec("m/s", {_C, _L}, 0, 120, "wind speed"),
    "wind_dir_deg": _spec("deg", {_C, _L}, 0, 360, "wind direction (from), clockwise from N"),
    "air_temp_c": _spec("°C", {_C, _L}, -80, 70, "ambient air temperature"),
    "air_pressure_hpa": _spec("hPa", {_C, _L}, 300, 1_100, "ambient air pressure"),
    "rel_humidity_pct": _spec("%", {_C, _L}, 0, 100, "relative humidity"),
    "co2_pct_vol": _spec("% vol", {_E}, -5, 100, "flue-gas CO2 concentration"),
    "flow_m3_h": _spec("m³/h", {_E}, 0, 1e9, "flue-gas flow, actual (wet) conditions"),
    "flue_temp_c": _spec("°C", {_E}, -60, 1_000, "flue-gas temperature"),
    "static_pressure_pa": _spec("Pa", {_E}, -50_000, 50_000, "flue-gas static pressure (gauge)"),
    "baro_pressure_pa": _spec("Pa", {_E}, 30_000, 120_000, "barometric pressure at the stack"),
    "moisture_pct_vol": _spec("% vol", {_E}, 0, 100, "flue-gas moisture volume fraction"),
    "o2_pct_vol": _spec("% vol", {_E}, 0, 100, "flue-gas O2 concentration"),
    "load_mw": _spec("MW", {_E}, -50, 2_000, "unit electrical load"),
    "ch4_pct_vol": _spec("% vol", {_M}, -5, 100, "methane concentration"),
    "co_ppm": _spec("ppm", {_M}, -50, 100_000, "carbon monoxide"),
    "air_velocity_m_s": _spec("m/s", {_M}, -50, 50, "airway air velocity"),
}


def _normalise_location(value: object) -> object:
    """Accept ``t1``/``T1``/``working_face`` alike."""
    if isinstance(value, str):
        v = value.strip()
        by_name = {m.name.lower(): m.value for m in MineLocation}
        return by_name.get(v.lower(), v.upper() if len(v) == 2 else v.lower())
    return value


Location = Annotated[MineLocation, BeforeValidator(_normalise_location)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadingItem(_Wire):
    """One channel inside a batch payload."""

    metric: str = Field(min_length=1, max_length=64)
    value: float
    ts: AwareDatetime | None = None
    flag: Flag | None = None
    location: Location | None = None


class SinglePayload(_Wire):
    """A payload carrying one reading."""

    ts: AwareDatetime
    metric: str = Field(min_length=1, max_length=64)
    value: float
    flag: Flag = Flag.NORMAL
    location: Location | None = None
    seq: int | None = Field(default=None, description="Optional device sequence number")


class BatchPayload(_Wire):
    """A payload carrying several readings (a data logger or gateway)."""

    ts: AwareDatetime | None = None
    flag: Flag = Flag.NORMAL
    location: Location | None = None
    seq: int | None = None
    readings: list[ReadingItem] = Field(min_length=1, max_length=MAX_BATCH_READINGS)

    @model_validator(mode="after")
    def _every_item_has_a_time(self) -> BatchPayload:
        if self.ts is None and any(r.ts is None for r in self.readings):
            raise ValueError("every reading needs a ts when the batch has none")
        return self


class WireReading(_Wire):
    """One validated reading as carried on Kafka."""

    ts: datetime
    metric: str
    value: float
    flag: Flag = Flag.NORMAL


_WIRE_READINGS: TypeAdapter[list[WireReading]] = TypeAdapter(list[WireReading])


class ReadingRecord(_Wire):
    """The Kafka value for one accepted MQTT message (key: ``device_id``)."""

    v: Literal[1] = 1
    device_id: str
    kind: SourceKind
    network: str
    site: str
    device: str
    location: MineLocation | None = None
    mqtt_topic: str
    received_at: datetime
    readings: list[WireReading]


class DeadLetterRecord(_Wire):
    """The Kafka value for one rejected MQTT message, with everything needed to replay it."""

    v: Literal[1] = 1
    mqtt_topic: str
    device_id: str | None
    reason: RejectReason
    detail: str
    received_at: datetime
    payload_b64: str

    @property
    def payload(self) -> bytes:
        """The raw payload exactly as the device sent it."""
        return base64.b64decode(self.payload_b64)


class DeviceStatus(_Wire):
    """What a device reads on its status topic after a rejection."""

    status: Literal["rejected"] = "rejected"
    reason: RejectReason
    detail: str
    received_at: datetime
    topic: str
    payload_excerpt: str


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A message that passed validation, ready to be produced to the readings topic."""

    record: ReadingRecord


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A message that failed validation, ready to be dead-lettered and reported to the device."""

    record: DeadLetterRecord
    device: DeviceRef | None

    def status(self) -> DeviceStatus:
        """The status message to publish to the device."""
        raw = self.record.payload
        return DeviceStatus(
            reason=self.record.reason,
            detail=self.record.detail,
            received_at=self.record.received_at,
            topic=self.record.mqtt_topic,
            payload_excerpt=raw[:_EXCERPT_CHARS].decode("utf-8", errors="replace"),
        )


def _reject(
    topic: str,
    payload: bytes,
    received_at: datetime,
    device: DeviceRef | None,
    reason: RejectReason,
    detail: str,
) -> RejectedMessage:
    record = DeadLetterRecord(
        mqtt_topic=topic,
        device_id=device.device_id if device else None,
        reason=reason,
        detail=detail[:1000],
        received_at=received_at,
        payload_b64=base64.b64encode(payload).decode("ascii"),
    )
    return RejectedMessage(record, device)


def _describe(exc: ValidationError) -> tuple[RejectReason, str]:
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] in {"json_invalid", "json_type"}:
        return RejectReason.MALFORMED_JSON, errors[0]["msg"]
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return RejectReason.SCHEMA, "; ".join(parts)


def validate_message(
    topic: str, payload: bytes, received_at: datetime, *, root: str
) -> AcceptedMessage | RejectedMessage:
    """Validate one MQTT message against the topic scheme and the wire contract.

    Args:
        topic: the MQTT topic it arrived on.
        payload: the raw payload.
        received_at: when the bridge received it (timezone-aware UTC).
        root: the topic root, e.g. ``ghg/v1``.

    Returns:
        An accepted message with its Kafka record, or a rejected one with a reason code and
        a human-readable detail. Never raises on bad input.
    """
    from ingest.topics import parse_data_topic

    device = parse_data_topic(topic, root)
    if device is None:
        return _reject(
            topic,
            payload,
            received_at,
            None,
            RejectReason.BAD_TOPIC,
            f"topic must be {root}/<kind>/<network>/<site>/<device>/data with kind one of "
            f"{', '.join(k.value for k in SourceKind)} and lower-case [a-z0-9_-] segments",
        )
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _reject(
            topic,
            payload,
            received_at,
            device,
            RejectReason.TOO_LARGE,
            f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}",
        )
    try:
        parsed: SinglePayload | BatchPayload
        if b'"readings"' in payload:
            parsed = BatchPayload.model_validate_json(payload)
        else:
            parsed = SinglePayload.model_validate_json(payload)
    except ValidationError as exc:
        reason, detail = _describe(exc)
        return _reject(topic, payload, received_at, device, reason, detail)

    if isinstance(parsed, SinglePayload):
        items = [(parsed.ts, parsed.metric, parsed.value, parsed.flag, parsed.location)]
        location = parsed.location
    else:
        location = parsed.location
        items = []
        for it in parsed.readings:
            ts = it.ts if it.ts is not None else parsed.ts
            assert ts is not None  # guaranteed by BatchPayload's validator
            items.append((ts, it.metric, it.value, it.flag or parsed.flag, it.location))
            location = location or it.location

    readings: list[dict[str, Any]] = []
    limit = received_at + MAX_FUTURE_SKEW
    for ts, metric, value, flag, _loc in items:
        spec = METRICS.get(metric)
        if spec is None:
            return _reject(
                topic,
                payload,
                received_at,
                device,
                RejectReason.UNKNOWN_METRIC,
                f"unknown metric {metric!r}; known for {device.kind.value}: "
                + ", ".join(sorted(m for m, s in METRICS.items() if device.kind in s.kinds)),
            )
        if device.kind not in spec.kinds:
            return _reject(
                topic,
                payload,
                received_at,
                device,
                RejectReason.WRONG_KIND,
                f"metric {metric!r} is not sent by {device.kind.value} sources",
            )
        if not math.isfinite(value) or not spec.min_value <= value <= spec.max_value:
            return _reject(
                topic,
                payload,
                received_at,
                device,
                RejectReason.OUT_OF_RANGE,
                f"{metric}={value} is outside the possible range "
                f"[{spec.min_value:g}, {spec.max_value:g}] {spec.unit}",
            )
        if ts > limit:
            return _reject(
                topic,
                payload,
                received_at,
                device,
                RejectReason.FUTURE_TIMESTAMP,
                f"ts {ts.isoformat()} is more than {MAX_FUTURE_SKEW} ahead of the receive "
                f"time {received_at.isoformat()}; check the device clock",
            )
        readings.append({"ts": ts.astimezone(UTC), "metric": metric, "value": value, "flag": flag})

    if device.kind is SourceKind.MINE and location is None:
        return _reject(
            topic,
            payload,
            received_at,
            device,
            RejectReason.MISSING_LOCATION,
            "mine sensors must give their location class: "
            + ", ".join(m.value for m in MineLocation),
        )
    record = ReadingRecord.model_construct(
        device_id=device.device_id,
        kind=device.kind,
        network=device.network,
        site=device.site,
        device=device.device,
        location=location,
        mqtt_topic=topic,
        received_at=received_at,
        # One pydantic-core call builds every reading: over twice as fast as constructing
        # them one by one in Python, and it checks them once more on the way.
        readings=_WIRE_READINGS.validate_python(readings),
    )
    return AcceptedMessage(record)
