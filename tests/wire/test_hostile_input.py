"""Hostile device input: nothing unstorable in a dead letter, bounded records, strict values."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from wire import (
    MIN_TIMESTAMP,
    DeadLetterRecord,
    RejectedMessage,
    RejectReason,
    safe_text,
    validate_message,
)
from wire.validate import MAX_DEAD_TOPIC_CHARS, TOO_LARGE_EXCERPT_BYTES

ROOT = "ghg/v1"
NOW = datetime(2026, 11, 25, 8, 0, 10, tzinfo=UTC)
TOPIC = f"{ROOT}/city/a/b/c/data"
# Apache Kafka's default limit on a record batch (message.max.bytes), 1 MB.
KAFKA_DEFAULT_MAX_RECORD_BYTES = 1_048_588
# The finding's poison: a NUL in a JSON key, quoted by pydantic into the dead letter detail.
POISON = b'{"ts":"2026-11-25T08:00:05Z","metric":"co2_ppm","value":1,"a\\u0000b":1}'


def _unstorable(text: str) -> bool:
    """Would PostgreSQL's text type refuse this string?"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in text


def _rejected(topic: str, payload: bytes) -> RejectedMessage:
    result = validate_message(topic, payload, NOW, root=ROOT)
    assert isinstance(result, RejectedMessage)
    return result


def _texts(record: DeadLetterRecord) -> list[str]:
    return [record.mqtt_topic, record.device_id or "", record.detail]


def test_a_nul_in_a_json_key_never_reaches_the_dead_letter_text() -> None:
    """The 70-byte poison is rejected as schema, and its detail names the key escaped."""
    result = _rejected(TOPIC, POISON)
    assert result.record.reason is RejectReason.SCHEMA
    assert not any(map(_unstorable, _texts(result.record)))
    assert "a\\x00b" in result.record.detail
    assert result.record.payload == POISON  # the raw bytes are kept as they came
    assert not _unstorable(result.status().model_dump_json())


@pytest.mark.parametrize(
    "topic",
    ["ghg/v1/city/a\x00/b/c/data", "ghg/v1/city/\ud800/b/c/data", "x" * 65_000],
)
def test_a_topic_with_nul_surrogate_or_huge_length_is_stored_escaped_and_cut(topic: str) -> None:
    """bad_topic dead letters carry the topic escaped and at most MAX_DEAD_TOPIC_CHARS."""
    result = _rejected(topic, b"{}")
    assert result.record.reason is RejectReason.BAD_TOPIC
    assert not any(map(_unstorable, _texts(result.record)))
    assert len(result.record.mqtt_topic) <= MAX_DEAD_TOPIC_CHARS


def test_a_dead_letter_record_from_kafka_is_escaped_when_read() -> None:
    """A raw dead-letter record carrying a NUL or lone surrogate is escaped by the model."""
    raw = json.dumps(
        {
            "mqtt_topic": "t\u0000",
            "device_id": "d\ud800",
            "reason": "schema",
            "detail": "x\u0000y",
            "received_at": NOW.isoformat(),
            "payload_b64": "",
        }
    )
    record = DeadLetterRecord.model_validate_json(raw.replace("\\ud800", "?"))
    assert not any(map(_unstorable, _texts(record)))
    built = DeadLetterRecord(
        mqtt_topic="t", device_id="d\ud800", reason=RejectReason.SCHEMA, detail="\x00",
        received_at=NOW, payload_b64="",
    )  # fmt: skip
    assert not any(map(_unstorable, _texts(built)))


def test_safe_text_leaves_ordinary_text_alone() -> None:
    """Only NUL and lone surrogates change."""
    assert safe_text("ghg/v1/city/a/b/c/data") == "ghg/v1/city/a/b/c/data"
    assert safe_text("温度 °C") == "温度 °C"
    assert safe_text("a\x00b\ud800") == "a\\x00b\\ud800"


@pytest.mark.parametrize("size", [300_000, 10 * 1024 * 1024])
def test_a_too_large_payload_keeps_an_excerpt_its_size_and_sha256(size: int) -> None:
    """A 10 MB payload makes a dead-letter record well under Kafka's default 1 MB limit."""
    payload = b"{" + b"7" * (size - 1)
    result = _rejected(TOPIC, payload)
    assert result.record.reason is RejectReason.TOO_LARGE
    assert result.record.payload == payload[:TOO_LARGE_EXCERPT_BYTES]
    assert str(size) in result.record.detail
    assert hashlib.sha256(payload).hexdigest() in result.record.detail
    assert len(result.record.model_dump_json()) < KAFKA_DEFAULT_MAX_RECORD_BYTES // 4
    worst = _rejected("x" * 65_000, payload)  # a huge topic too: cut, payload kept whole
    assert len(worst.record.model_dump_json()) < KAFKA_DEFAULT_MAX_RECORD_BYTES


@pytest.mark.parametrize(
    "body",
    [
        {"ts": "2026-11-25T08:00:00Z", "metric": "co2_ppm", "value": "1.5"},
        {"ts": "2026-11-25T08:00:00Z", "metric": "co2_ppm", "value": True},
        {"ts": "2026-11-25T08:00:00Z", "metric": "co2_ppm", "value": 1, "seq": "7"},
        {"ts": "2026-11-25T08:00:00Z", "readings": [{"metric": "co2_ppm", "value": "1"}]},
    ],
)
def test_numbers_sent_as_strings_or_booleans_are_refused(body: object) -> None:
    """Values are strict JSON numbers: "1.5" is a device bug, not a reading."""
    result = _rejected(TOPIC, json.dumps(body).encode())
    assert result.record.reason is RejectReason.SCHEMA


def test_integer_values_are_still_numbers() -> None:
    """A JSON integer is a number (many loggers send whole values)."""
    body = {"ts": "2026-11-25T08:00:00Z", "metric": "co2_ppm", "value": 420}
    assert not isinstance(
        validate_message(TOPIC, json.dumps(body).encode(), NOW, root=ROOT), RejectedMessage
    )


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z", 0, -1, "1999-12-31T23:59:59Z"]
)
@pytest.mark.parametrize("copies", [1, 300])
def test_timestamps_before_the_plausible_window_are_refused(ts: object, copies: int) -> None:
    """Year 1, 1900, epoch 0 and -1 are a lost device clock (small and numpy passes alike)."""
    body = {"ts": ts, "readings": [{"metric": "co2_ppm", "value": 1}] * copies}
    result = _rejected(TOPIC, json.dumps(body).encode())
    assert result.record.reason is RejectReason.ANCIENT_TIMESTAMP
    assert MIN_TIMESTAMP.isoformat() in result.record.detail


def test_the_window_opens_at_min_timestamp() -> None:
    """A reading at MIN_TIMESTAMP itself is accepted."""
    body = {"ts": MIN_TIMESTAMP.isoformat(), "metric": "co2_ppm", "value": 1}
    assert not isinstance(
        validate_message(TOPIC, json.dumps(body).encode(), NOW, root=ROOT), RejectedMessage
    )
