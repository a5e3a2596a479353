"""Validation of MQTT messages against the wire contract, a whole receive batch at a time.

:func:`validate_messages` turns (topic, payload, received time) triples into
:class:`AcceptedMessage` (with its :class:`~wire.batch.ReadingBatch`, encoded) or
:class:`RejectedMessage` (with a reason code and a detail for the device). It never raises on
bad input. The verdicts are those of the pydantic models in :mod:`wire.schemas`; only the
work is arranged for speed:

1. Each payload is parsed by a lean pydantic schema that keeps ``ts`` as text. A payload the
   lean schema refuses is parsed again by the full models, whose error the device is told.
2. All timestamps of the pass are parsed at once (:func:`wire.timestamps.parse_rfc3339_us`;
   a small pass one by one by pydantic's own datetime rules); a message with a timestamp the
   array parser does not understand goes through the full models instead.
3. Metric, kind, range and clock checks run as numpy expressions over every reading of the
   pass (in plain Python below :data:`VECTOR_MIN_READINGS` readings, where numpy's call
   overhead outweighs the work). A message is rejected for its first reading that fails,
   with the first check that reading fails, in the order: unknown metric, metric of another
   kind, out of range, future time, time before :data:`~wire.schemas.MIN_TIMESTAMP`. Then mine
   sensors must have named their location.

Nothing a device sends reaches a dead letter unescaped: its topic and the detail (which may
quote its JSON keys) go through :func:`~wire.schemas.safe_text`, a topic is cut to
:data:`MAX_DEAD_TOPIC_CHARS`, and a payload above the size limit is kept as its first
:data:`TOO_LARGE_EXCERPT_BYTES` with its size and SHA-256, so no dead-letter record comes near
Kafka's default 1 MB record limit.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Required

import numpy as np
from pydantic import ConfigDict, Field, StrictFloat, StrictInt, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from wire.batch import ReadingBatch, encode_batch, epoch_us, from_epoch_us, reading_header
from wire.events import WILL_PAYLOAD, DeviceEvent, DeviceEventRecord
from wire.schemas import (
    MAX_BATCH_READINGS,
    MAX_FUTURE_SKEW,
    MAX_PAYLOAD_BYTES,
    METRICS,
    MIN_TIMESTAMP,
    BatchPayload,
    DeadLetterRecord,
    DeviceStatus,
    Flag,
    Location,
    MineLocation,
    ReadingRecord,
    RejectReason,
    SinglePayload,
    SourceKind,
    safe_text,
)
from wire.timestamps import VECTOR_MIN_STRINGS, parse_rfc3339_us, parse_timestamp_us
from wire.topics import DeviceRef, parse_data_topic

__all__ = [
    "MAX_DEAD_TOPIC_CHARS",
    "TOO_LARGE_EXCERPT_BYTES",
    "VECTOR_MIN_READINGS",
    "AcceptedMessage",
    "EventMessage",
    "RejectedMessage",
    "Verdict",
    "reject_message",
    "validate_message",
    "validate_messages",
]

_EXCERPT_CHARS = 200
# From this many readings in a pass on, the checks run as numpy expressions; below it plain
# Python is faster (numpy's per-call overhead made a one-message pass cost ~200 us; with
# passes of 200 single readings Python checks gave 125k messages/s against 109k).
VECTOR_MIN_READINGS = 256
_DETAIL_CHARS = 1000
# Of a payload above MAX_PAYLOAD_BYTES the dead letter keeps this much (base64: ~87 KB), with
# the size and SHA-256 of the whole: enough to see what the device sent, and a dead-letter
# record stays far below Kafka's default 1 MB limit (whole 10 MB payloads made 13 MB records
# that Apache Kafka refuses, which would stop the bridge).
TOO_LARGE_EXCERPT_BYTES = 64 * 1024
# A topic is stored in the dead letters' unique index, whose entries PostgreSQL caps at
# ~2.7 kB; MQTT allows 65,535-byte topics. 512 characters are at most 2 kB of UTF-8.
MAX_DEAD_TOPIC_CHARS = 512
_SKEW_US = MAX_FUTURE_SKEW // timedelta(microseconds=1)
_MIN_US = epoch_us(MIN_TIMESTAMP)
_KINDS = tuple(SourceKind)
_KIND_CODE = {k: i for i, k in enumerate(_KINDS)}
# The metric catalogue as arrays, indexed by a metric's position in METRICS.
_METRIC_NAMES = tuple(METRICS)
_METRIC_CODE = {name: i for i, name in enumerate(_METRIC_NAMES)}
_LO = np.array([METRICS[m].min_value for m in _METRIC_NAMES], dtype=np.float64)
_HI = np.array([METRICS[m].max_value for m in _METRIC_NAMES], dtype=np.float64)
# _ALLOWED[kind, metric]: may a source of this kind send this metric?
_ALLOWED = np.array([[k in METRICS[m].kinds for m in _METRIC_NAMES] for k in _KINDS], dtype=bool)


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """A message that passed validation, ready to be produced to the readings topic.

    Attributes:
        device_id: the sender, the record's Kafka key.
        value: the record's value, a :class:`~wire.batch.ReadingBatch` encoded.
    """

    device_id: str
    value: bytes

    @property
    def batch(self) -> ReadingBatch:
        """The readings as columns (decoded from :attr:`value`)."""
        return ReadingBatch.decode(self.value)

    @property
    def record(self) -> ReadingRecord:
        """The readings as a format-1 record (one object per reading; for tools and tests)."""
        return self.batch.to_record()


@dataclass(frozen=True, slots=True)
class EventMessage:
    """A device's MQTT last will on its data topic: forwarded as an event, not a rejection."""

    device_id: str
    record: DeviceEventRecord

    @property
    def value(self) -> bytes:
        """The record's Kafka value."""
        return self.record.model_dump_json().encode()


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


# -- the lean schemas: the models of wire.schemas with ``ts`` kept as text ------------------
# Anything these refuse is parsed again by the full models, so only their acceptance matters:
# every field but ``ts`` has exactly the type and constraints of the full model.

_Metric = Annotated[str, Field(min_length=1, max_length=64)]


class _LeanItem(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    metric: Required[_Metric]
    value: Required[StrictFloat]
    ts: str | None
    flag: Flag | None
    location: Location | None


_LeanItems = Annotated[list[_LeanItem], Field(min_length=1, max_length=MAX_BATCH_READINGS)]


class _LeanBatch(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    ts: str | None
    flag: Flag
    location: Location | None
    seq: StrictInt | None
    readings: Required[_LeanItems]


class _LeanSingle(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    ts: Required[str]
    metric: Required[_Metric]
    value: Required[StrictFloat]
    flag: Flag
    location: Location | None
    seq: StrictInt | None


_LEAN_BATCH: TypeAdapter[_LeanBatch] = TypeAdapter(_LeanBatch)
_LEAN_SINGLE: TypeAdapter[_LeanSingle] = TypeAdapter(_LeanSingle)


@dataclass(slots=True)
class _Parsed:
    """One message's readings on their way through the checks."""

    index: int
    device: DeviceRef
    received_us: int
    metrics: list[str]
    values: list[float]
    flags: str
    location: MineLocation | None
    ts_text: list[str] = field(default_factory=list)
    ts_us: Any = None  # epoch microseconds once known: a list (small pass) or an array


def _reject(
    topic: str,
    payload: bytes,
    received_at: datetime,
    device: DeviceRef | None,
    reason: RejectReason,
    detail: str,
) -> RejectedMessage:
    if len(payload) > MAX_PAYLOAD_BYTES:
        # Whatever the reason (a bad topic is found before the size), keep a bounded excerpt.
        detail = (
            f"{detail}; sha256 {hashlib.sha256(payload).hexdigest()} of {len(payload)} bytes,"
            f" the first {TOO_LARGE_EXCERPT_BYTES} kept"
        )
        payload = payload[:TOO_LARGE_EXCERPT_BYTES]
    stored_topic = safe_text(topic)
    if len(stored_topic) > MAX_DEAD_TOPIC_CHARS:
        detail = f"{detail} (topic of {len(topic)} characters, first {MAX_DEAD_TOPIC_CHARS} kept)"
        stored_topic = stored_topic[:MAX_DEAD_TOPIC_CHARS]
    record = DeadLetterRecord(
        mqtt_topic=stored_topic,
        device_id=device.device_id if device else None,
        reason=reason,
        detail=safe_text(detail)[:_DETAIL_CHARS],
        received_at=received_at,
        payload_b64=base64.b64encode(payload).decode("ascii"),
    )
    return RejectedMessage(record, device)


def reject_message(
    topic: str,
    payload: bytes,
    received_at: datetime,
    device: DeviceRef | None,
    reason: RejectReason,
    detail: str,
) -> RejectedMessage:
    """A rejection decided outside validation (e.g. the bridge's registry check), built like
    every other: the payload bounded, the topic and detail made storable."""
    return _reject(topic, payload, received_at, device, reason, detail)


def _describe(exc: ValidationError) -> tuple[RejectReason, str]:
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] in {"json_invalid", "json_type"}:
        return RejectReason.MALFORMED_JSON, errors[0]["msg"]
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    return RejectReason.SCHEMA, "; ".join(parts)


def _lean(index: int, device: DeviceRef, payload: bytes, received_us: int) -> _Parsed | None:
    """Parse with the lean schemas; None when they refuse or a reading has no time."""
    try:
        if b'"readings"' in payload:
            batch = _LEAN_BATCH.validate_json(payload)
        else:
            one = _LEAN_SINGLE.validate_json(payload)
            flag = one.get("flag", Flag.NORMAL)
            return _Parsed(
                index, device, received_us, [one["metric"]], [one["value"]], flag,
                one.get("location"), [one["ts"]],
            )  # fmt: skip
    except ValidationError:
        return None
    items = batch["readings"]
    env_ts = batch.get("ts")
    env_flag = batch.get("flag", Flag.NORMAL)
    ts_text = [t if (t := it.get("ts")) is not None else env_ts for it in items]
    if None in ts_text:
        return None  # the full model says which reading lacks a time
    location = batch.get("location")
    if location is None:
        location = next((it["location"] for it in items if it.get("location")), None)
    return _Parsed(
        index, device, received_us,
        [it["metric"] for it in items],
        [it["value"] for it in items],
        "".join([it.get("flag") or env_flag for it in items]),
        location,
        ts_text,  # type: ignore[arg-type]
    )  # fmt: skip


def _full(
    index: int, device: DeviceRef, topic: str, payload: bytes, received_at: datetime
) -> _Parsed | RejectedMessage:
    """Parse with the full models of :mod:`wire.schemas` (their verdict is the contract)."""
    try:
        parsed: SinglePayload | BatchPayload
        if b'"readings"' in payload:
            parsed = BatchPayload.model_validate_json(payload)
        else:
            parsed = SinglePayload.model_validate_json(payload)
    except ValidationError as exc:
        reason, detail = _describe(exc)
        return _reject(topic, payload, received_at, device, reason, detail)
    out = _Parsed(index, device, epoch_us(received_at), [], [], "", parsed.location)
    if isinstance(parsed, SinglePayload):
        out.metrics, out.values, out.flags = [parsed.metric], [parsed.value], parsed.flag.value
        out.ts_us = np.array([epoch_us(parsed.ts)], dtype=np.int64)
        return out
    items = parsed.readings
    # BatchPayload's validator guarantees a time for every reading.
    out.ts_us = np.array(
        [epoch_us(it.ts or parsed.ts) for it in items],  # type: ignore[arg-type]
        dtype=np.int64,
    )
    out.metrics = [it.metric for it in items]
    out.values = [it.value for it in items]
    out.flags = "".join((it.flag or parsed.flag).value for it in items)
    if out.location is None:
        out.location = next((it.location for it in items if it.location), None)
    return out


def _item_detail(
    code: int, metric: str, value: float, ts_us: int, device: DeviceRef, received_at: datetime
) -> tuple[RejectReason, str]:
    """The reason and detail for a reading failing the check numbered ``code``."""
    if code == 0:
        return RejectReason.UNKNOWN_METRIC, (
            f"unknown metric {metric!r}; known for {device.kind.value}: "
            + ", ".join(sorted(m for m, s in METRICS.items() if device.kind in s.kinds))
        )
    if code == 1:
        return RejectReason.WRONG_KIND, (
            f"metric {metric!r} is not sent by {device.kind.value} sources"
        )
    spec = METRICS[metric]
    if code == 2:
        return RejectReason.OUT_OF_RANGE, (
            f"{metric}={value} is outside the possible range "
            f"[{spec.min_value:g}, {spec.max_value:g}] {spec.unit}"
        )
    if code == 3:
        return RejectReason.FUTURE_TIMESTAMP, (
            f"ts {from_epoch_us(ts_us).isoformat()} is more than {MAX_FUTURE_SKEW} ahead of the "
            f"receive time {received_at.isoformat()}; check the device clock"
        )
    return RejectReason.ANCIENT_TIMESTAMP, (
        f"ts {from_epoch_us(ts_us).isoformat()} is before {MIN_TIMESTAMP.isoformat()}; the device"
        " clock has lost its setting"
    )


Verdict = AcceptedMessage | EventMessage | RejectedMessage
# A last will is ``{"status": "offline"}``; anything longer is not one (cheap pre-check).
_WILL_MAX_BYTES = 64


def _is_will(payload: bytes) -> bool:
    if len(payload) > _WILL_MAX_BYTES or b"offline" not in payload:
        return False
    try:
        return bool(json.loads(payload) == WILL_PAYLOAD)
    except ValueError:
        return False


def _event(device: DeviceRef, topic: str, received_at: datetime) -> EventMessage:
    record = DeviceEventRecord(
        device_id=device.device_id,
        kind=device.kind.value,
        network=device.network,
        site=device.site,
        event=DeviceEvent.OFFLINE,
        received_at=received_at,
        mqtt_topic=topic,
    )
    return EventMessage(device.device_id, record)


def validate_messages(
    messages: Sequence[tuple[str, bytes, datetime]], *, root: str
) -> list[Verdict]:
    """Validate MQTT messages against the topic scheme and the wire contract.

    Args:
        messages: (topic, payload, received_at) of each message; ``received_at`` is when the
            bridge received it (timezone-aware UTC).
        root: the topic root, e.g. ``ghg/v1``.

    Returns:
        One verdict per message, in order: an accepted message with its readings batch, a
        device event (the device's last will), or a rejected one with a reason code and a
        human-readable detail. Never raises on bad input.
    """
    results: list[Verdict | None] = [None] * len(messages)
    lean: list[_Parsed] = []
    full: list[int] = []
    for i, (topic, payload, received_at) in enumerate(messages):
        device = parse_data_topic(topic, root)
        if device is None:
            results[i] = _reject(
                topic, payload, received_at, None, RejectReason.BAD_TOPIC,
                f"topic must be {root}/<kind>/<network>/<site>/<device>/data with kind one of "
                f"{', '.join(k.value for k in SourceKind)} and lower-case [a-z0-9_-] segments",
            )  # fmt: skip
            continue
        if len(payload) > MAX_PAYLOAD_BYTES:
            results[i] = _reject(
                topic, payload, received_at, device, RejectReason.TOO_LARGE,
                f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            )  # fmt: skip
            continue
        if _is_will(payload):
            results[i] = _event(device, topic, received_at)
            continue
        parsed = _lean(i, device, payload, epoch_us(received_at))
        if parsed is None:
            full.append(i)
        else:
            lean.append(parsed)

    # 2. Every lean message's timestamps in one pass; odd shapes go to the full models.
    texts = [t for p in lean for t in p.ts_text]
    ts_all: Any
    if len(texts) >= VECTOR_MIN_STRINGS:
        ts_all, understood = parse_rfc3339_us(texts)
        everything = bool(understood.all())

        def all_read(start: int, end: int) -> bool:
            return everything or bool(understood[start:end].all())
    else:
        # one by one by pydantic's rules: cheaper than arrays for a few hundred strings
        ts_all = [parse_timestamp_us(t) for t in texts]

        def all_read(start: int, end: int) -> bool:
            return None not in ts_all[start:end]

    ready: list[_Parsed] = []
    start = 0
    for p in lean:
        end = start + len(p.ts_text)
        if all_read(start, end):
            p.ts_us = ts_all[start:end]
            ready.append(p)
        else:
            full.append(p.index)
        start = end
    for i in sorted(full):
        topic, payload, received_at = messages[i]
        device = parse_data_topic(topic, root)
        assert device is not None
        verdict = _full(i, device, topic, payload, received_at)
        if isinstance(verdict, RejectedMessage):
            results[i] = verdict
        else:
            ready.append(verdict)
    if ready:
        _check_and_build(ready, messages, results)
    verdicts = [r for r in results if r is not None]
    assert len(verdicts) == len(messages), "every message gets a verdict"
    return verdicts


def _first_failures_np(
    ready: list[_Parsed], starts: list[int], codes: Any, values: Any, ts_us: Any
) -> dict[int, tuple[int, int]]:
    """Per message with a failing reading: (first failing reading, first check it fails)."""
    counts = np.array([len(p.metrics) for p in ready], dtype=np.int64)
    kind = np.repeat(np.array([_KIND_CODE[p.device.kind] for p in ready]), counts)
    limit = np.repeat(np.array([p.received_us for p in ready]) + _SKEW_US, counts)
    known = codes >= 0
    safe = np.where(known, codes, 0)
    with np.errstate(invalid="ignore"):
        out_of_range = known & ~((values >= _LO[safe]) & (values <= _HI[safe]))
    failed = np.stack(
        [~known, known & ~_ALLOWED[kind, safe], out_of_range, ts_us > limit, ts_us < _MIN_US]
    )
    bad_items = np.flatnonzero(failed.any(axis=0))
    first: dict[int, tuple[int, int]] = {}
    if len(bad_items):
        owner = np.searchsorted(np.asarray(starts), bad_items, side="right") - 1
        checks = np.argmax(failed[:, bad_items], axis=0)
        for msg, item, check in zip(owner.tolist(), bad_items.tolist(), checks.tolist(),
                                    strict=True):  # fmt: skip
            first.setdefault(msg, (item, check))
    return first


def _first_failures_py(
    ready: list[_Parsed], starts: list[int], codes: list[int], values: list[float], ts_us: Any
) -> dict[int, tuple[int, int]]:
    """:func:`_first_failures_np` for a few readings, where numpy's call overhead dominates."""
    first: dict[int, tuple[int, int]] = {}
    for k, p in enumerate(ready):
        kind = _KIND_CODE[p.device.kind]
        limit = p.received_us + _SKEW_US
        for item in range(starts[k], starts[k] + len(p.metrics)):
            code, value = codes[item], values[item]
            if code < 0:
                check = 0
            elif not _ALLOWED[kind, code]:
                check = 1
            elif not _LO[code] <= value <= _HI[code]:  # NaN fails both comparisons
                check = 2
            elif ts_us[item] > limit:
                check = 3
            elif ts_us[item] < _MIN_US:
                check = 4
            else:
                continue
            first[k] = (item, check)
            break
    return first


def _check_and_build(
    ready: list[_Parsed],
    messages: Sequence[tuple[str, bytes, datetime]],
    results: list[Verdict | None],
) -> None:
    """Step 3: the per-reading checks over all readings at once, then the batches."""
    starts: list[int] = []
    total = 0
    for p in ready:
        starts.append(total)
        total += len(p.metrics)
    code_list = [_METRIC_CODE.get(m, -1) for p in ready for m in p.metrics]
    value_list = [v for p in ready for v in p.values]
    codes: Any
    values: Any
    ts_us: Any
    if total >= VECTOR_MIN_READINGS:
        codes = np.array(code_list, dtype=np.int64)
        values = np.array(value_list, dtype=np.float64)
        ts_us = np.concatenate([np.asarray(p.ts_us, dtype=np.int64) for p in ready])
        first_bad = _first_failures_np(ready, starts, codes, values, ts_us)
    else:
        codes, values = code_list, value_list
        ts_us = [int(t) for p in ready for t in p.ts_us]
        first_bad = _first_failures_py(ready, starts, codes, values, ts_us)
    for k, p in enumerate(ready):
        topic, payload, received_at = messages[p.index]
        if (bad := first_bad.get(k)) is not None:
            item, check = bad
            local = item - starts[k]
            reason, detail = _item_detail(
                check, p.metrics[local], p.values[local], int(ts_us[item]), p.device, received_at
            )
            results[p.index] = _reject(topic, payload, received_at, p.device, reason, detail)
            continue
        if p.device.kind is SourceKind.MINE and p.location is None:
            results[p.index] = _reject(
                topic, payload, received_at, p.device, RejectReason.MISSING_LOCATION,
                "mine sensors must give their location class: "
                + ", ".join(m.value for m in MineLocation),
            )  # fmt: skip
            continue
        s, e = starts[k], starts[k] + len(p.metrics)
        value = _encode(p, topic, codes[s:e], ts_us[s:e], values[s:e])
        results[p.index] = AcceptedMessage(p.device.device_id, value)


def _encode(p: _Parsed, topic: str, codes: Any, ts_us: Any, values: Any) -> bytes:
    """The Kafka value of an accepted message; its metric list names what it carries."""
    first = p.metrics[0]
    local: Any
    if p.metrics.count(first) == len(p.metrics):
        names: tuple[str, ...] = (first,)
        local = [0] * len(p.metrics)
    else:
        used, inverse = np.unique(np.asarray(codes), return_inverse=True)
        names = tuple(_METRIC_NAMES[c] for c in used.tolist())
        local = inverse if isinstance(ts_us, np.ndarray) else inverse.tolist()
    _header, header_json = reading_header(p.device, topic, p.location, names)
    return encode_batch(header_json, p.received_us, ts_us, local, values, p.flags.encode())


def validate_message(topic: str, payload: bytes, received_at: datetime, *, root: str) -> Verdict:
    """Validate one MQTT message (see :func:`validate_messages`)."""
    return validate_messages([(topic, payload, received_at)], root=root)[0]
