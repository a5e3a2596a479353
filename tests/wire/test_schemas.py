"""The wire contract: what validate_message accepts, and why it rejects the rest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from wire import AcceptedMessage, ReadingRecord, RejectedMessage, RejectReason, validate_message
from wire.events import DeviceEvent, DeviceEventRecord
from wire.validate import EventMessage, Verdict

ROOT = "ghg/v1"
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def _validate(topic: str, body: object) -> Verdict:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate_message(f"{ROOT}/{topic}", payload, NOW, root=ROOT)


def test_accepted_record_is_exactly_what_validation_of_its_json_gives() -> None:
    """The Kafka record survives a JSON round trip through its own model unchanged."""
    result = _validate(
        "mine/ordos-coal/buertai/gw-1/data",
        {
            "ts": "2026-11-25T15:59:00+08:00",
            "location": "working_face",
            "flag": "C",
            "readings": [
                {"metric": "ch4_pct_vol", "value": 1},
                {"metric": "co_ppm", "value": 3.5, "flag": "N", "ts": "2026-11-25T07:58:00Z"},
            ],
        },
    )
    assert isinstance(result, AcceptedMessage)
    text = result.record.model_dump_json()
    assert ReadingRecord.model_validate_json(text).model_dump_json() == text
    body = json.loads(text)
    assert body["location"] == "T1"
    assert [(r["ts"], r["value"], r["flag"]) for r in body["readings"]] == [
        ("2026-11-25T07:59:00Z", 1.0, "C"),
        ("2026-11-25T07:58:00Z", 3.5, "N"),
    ]


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("city/a/b/c/data", b"{nope", RejectReason.MALFORMED_JSON),
        (
            "city/a/b/c/data",
            {"ts": "2026-11-25T07:00:00", "metric": "co2_ppm", "value": 1},
            RejectReason.SCHEMA,
        ),
        (
            "city/a/b/c/data",
            {"ts": "2026-11-25T07:00:00Z", "metric": "x_ppm", "value": 1},
            RejectReason.UNKNOWN_METRIC,
        ),
        (
            "city/a/b/c/data",
            {"ts": "2026-11-25T07:00:00Z", "metric": "load_mw", "value": 1},
            RejectReason.WRONG_KIND,
        ),
        (
            "cems/a/b/c/data",
            {"ts": "2026-11-25T07:00:00Z", "metric": "o2_pct_vol", "value": 101},
            RejectReason.OUT_OF_RANGE,
        ),
        (
            "city/a/b/c/data",
            {"ts": "2026-11-25T09:00:00Z", "metric": "co2_ppm", "value": 1},
            RejectReason.FUTURE_TIMESTAMP,
        ),
        (
            "mine/a/b/c/data",
            {"ts": "2026-11-25T07:00:00Z", "metric": "ch4_pct_vol", "value": 1},
            RejectReason.MISSING_LOCATION,
        ),
        (
            "city/A/b/c/data",
            {"ts": "2026-11-25T07:00:00Z", "metric": "co2_ppm", "value": 1},
            RejectReason.BAD_TOPIC,
        ),
    ],
)
def test_each_kind_of_bad_message_is_rejected_with_its_reason(
    topic: str, body: object, reason: RejectReason
) -> None:
    """The reason code says what to fix; the raw payload is kept for replay."""
    result = _validate(topic, body)
    assert isinstance(result, RejectedMessage)
    assert result.record.reason is reason
    assert result.record.detail
    sent = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert result.record.payload == sent
    assert (result.device is None) == (reason is RejectReason.BAD_TOPIC)


def test_late_data_of_any_age_is_accepted() -> None:
    """Only clocks ahead of ours are wrong; a gateway catching up on last week is fine."""
    old = (NOW - timedelta(days=7)).isoformat()
    result = _validate("leak/a/b/c/data", {"ts": old, "metric": "ch4_ppm", "value": 2.0})
    assert isinstance(result, AcceptedMessage)


@pytest.mark.parametrize(
    "payload", [b'{"status": "offline"}', b'{"status":"offline"}', b' {"status" : "offline"}\n']
)
def test_a_last_will_is_a_device_event_not_a_rejection(payload: bytes) -> None:
    """The documented will payload on a device's data topic becomes an offline event."""
    result = _validate("mine/ordos-coal/buertai/t1-0302/data", payload)
    assert isinstance(result, EventMessage)
    record = DeviceEventRecord.model_validate_json(result.value)
    assert record.event is DeviceEvent.OFFLINE
    assert (record.device_id, record.kind, record.site) == (
        "ordos-coal/buertai/t1-0302",
        "mine",
        "buertai",
    )


@pytest.mark.parametrize(
    "body",
    [{"status": "online"}, {"status": "offline", "x": 1}, {"status": "OFFLINE"}, ["offline"]],
)
def test_anything_else_shaped_like_a_will_is_still_rejected(body: object) -> None:
    result = _validate("mine/ordos-coal/buertai/t1-0302/data", body)
    assert isinstance(result, RejectedMessage)
    assert result.record.reason is RejectReason.SCHEMA
