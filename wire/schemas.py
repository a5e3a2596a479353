"""The wire contract: MQTT payloads devices send, and the records ghgwatch puts on Kafka.

A device publishes JSON on its data topic (see :mod:`wire.topics`), either one reading::

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

The models here are the contract; :mod:`wire.validate` applies them to messages, and
:mod:`wire.batch` is the columnar form accepted readings take on Kafka.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    model_validator,
)

__all__ = [
    "MAX_BATCH_READINGS",
    "MAX_FUTURE_SKEW",
    "MAX_PAYLOAD_BYTES",
    "METRICS",
    "MIN_TIMESTAMP",
    "SENDER_FIELDS",
    "BatchPayload",
    "DeadLetterRecord",
    "DeviceStatus",
    "Flag",
    "MetricSpec",
    "MineLocation",
    "ReadingHeader",
    "ReadingItem",
    "ReadingRecord",
    "RejectReason",
    "SinglePayload",
    "SourceKind",
    "WireReading",
    "safe_text",
]

MAX_PAYLOAD_BYTES = 256 * 1024
# A device clock this far ahead of ours is wrong; late data back to MIN_TIMESTAMP is accepted.
MAX_FUTURE_SKEW = timedelta(minutes=10)
# Readings older than this are a device clock that lost its setting (year 1, 1900, epoch 0 or
# -1 after a battery or RTC failure), not late data: no ghgwatch device measured before 2000,
# and storing them would put readings decades outside every dashboard and retention window.
MIN_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
MAX_BATCH_READINGS = 10_000


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
    """Coal-mine CH4 sensor location classes (Coal Mine Safety Regulations 2022, art. 498
    table of methane sensors; AQ 1029): T0-T8 at a longwall face and the return airways.

    The levels of each class are :func:`core.settings.DetectionSettings.mine_levels`.
    """

    UPPER_CORNER = "T0"
    WORKING_FACE = "T1"
    FACE_RETURN = "T2"
    INTAKE_HIGH_GAS = "T3"
    SERIAL_INTAKE = "T4"
    DRAINAGE_FACE = "T5"
    DRAINAGE_FACE_RETURN = "T6"
    DRAINAGE = "T7"
    DRAINAGE_MIXED_RETURN = "T8"
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
    ANCIENT_TIMESTAMP = "ancient_timestamp"
    MISSING_LOCATION = "missing_location"
    UNREGISTERED = "unregistered"
    # HJ 212-2017 gateway: frames refused before their readings are looked at.
    BAD_FRAME = "bad_frame"
    BAD_LENGTH = "bad_length"
    TRUNCATED = "truncated"
    BAD_CRC = "bad_crc"
    BAD_SEGMENT = "bad_segment"
    UNKNOWN_CN = "unknown_cn"
    UNKNOWN_MN = "unknown_mn"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason code, not a password
    DISABLED = "disabled"


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


_LOCATION_BY_NAME = {m.name.lower(): m.value for m in MineLocation}


def safe_text(text: str) -> str:
    """``text`` with what PostgreSQL's ``text`` cannot hold written as escapes.

    PostgreSQL refuses NUL (U+0000) in text, and a lone surrogate (U+D800-U+DFFF, which a
    Python string can hold after lenient decoding) has no UTF-8 form at all, so either one in
    a stored string fails the whole write. They become ``\\x00`` and ``\\udXXX``; a backslash
    already there stays as it is, so the escape is for people reading it, not reversible.
    """
    if text.isascii():
        return text.replace("\x00", "\\x00") if "\x00" in text else text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _refuse_unsafe(text: str) -> str:
    if safe_text(text) != text:
        raise ValueError("text holds NUL or a lone surrogate")
    return text


# Text from a device that ghgwatch stores for people to read: escaped, never refused.
_SafeText = Annotated[str, AfterValidator(safe_text)]
# Text ghgwatch made itself (from a valid topic): anything unstorable means a corrupt record.
_CleanText = Annotated[str, AfterValidator(_refuse_unsafe)]


def _normalise_location(value: object) -> object:
    """Accept ``t1``/``T1``/``working_face`` alike."""
    if isinstance(value, str):
        v = value.strip()
        return _LOCATION_BY_NAME.get(v.lower(), v.upper() if len(v) == 2 else v.lower())
    return value


Location = Annotated[MineLocation, BeforeValidator(_normalise_location)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadingItem(_Wire):
    """One channel inside a batch payload."""

    metric: str = Field(min_length=1, max_length=64)
    value: StrictFloat
    ts: AwareDatetime | None = None
    flag: Flag | None = None
    location: Location | None = None


class SinglePayload(_Wire):
    """A payload carrying one reading."""

    ts: AwareDatetime
    metric: str = Field(min_length=1, max_length=64)
    value: StrictFloat
    flag: Flag = Flag.NORMAL
    location: Location | None = None
    seq: StrictInt | None = Field(default=None, description="Optional device sequence number")


class BatchPayload(_Wire):
    """A payload carrying several readings (a data logger or gateway)."""

    ts: AwareDatetime | None = None
    flag: Flag = Flag.NORMAL
    location: Location | None = None
    seq: StrictInt | None = None
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


class _Sender(_Wire):
    """Who sent a message's readings, and on which topic: common to both record formats."""

    device_id: _CleanText
    kind: SourceKind
    network: _CleanText
    site: _CleanText
    device: _CleanText
    location: MineLocation | None = None
    mqtt_topic: _CleanText


SENDER_FIELDS: set[str] = set(_Sender.model_fields)


class ReadingRecord(_Sender):
    """Format 1 of the Kafka value for one accepted MQTT message (key: ``device_id``): JSON
    with an object per reading. Bridges now produce format 2 (:mod:`wire.batch`); consumers
    still read this, and tools use it to show a batch."""

    v: Literal[1] = 1
    received_at: datetime
    readings: list[WireReading]


class ReadingHeader(_Sender):
    """The JSON header of a readings record (format 2, see :mod:`wire.batch`): who sent
    the readings, on which topic, and the metric names the readings' indices point to.

    It changes only when a device's topic, location or set of metrics does, so encoders and
    decoders keep it cached; per-message facts (receive time, count) travel beside it.
    """

    v: Literal[2] = 2
    metrics: tuple[_CleanText, ...]


class DeadLetterRecord(_Wire):
    """The Kafka value for one rejected MQTT message, with everything needed to replay it."""

    v: Literal[1] = 1
    mqtt_topic: _SafeText
    device_id: _SafeText | None
    reason: RejectReason
    detail: _SafeText
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
