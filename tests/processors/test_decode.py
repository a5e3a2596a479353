"""Decoding Kafka values never raises: bad records become undecodable_record dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

from proc_helpers import dead_letter, mixed_records

from processors.storage import UNDECODABLE_REASON, KafkaValue, decode_values

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_readings_dead_letters_and_garbage_are_sorted_out() -> None:
    """Valid records decode by topic; garbage, tombstones and wrong shapes are dead letters."""
    rec = mixed_records(1, 1)[0]
    dl = dead_letter(1)
    items = [
        KafkaValue("r", 0, 0, b"k", rec.model_dump_json().encode()),
        KafkaValue("d", 1, 7, None, dl.model_dump_json().encode()),
        KafkaValue("r", 2, 3, b"dev", b"\xff\xfe garbage"),
        KafkaValue("r", 2, 4, None, None),
        KafkaValue("d", 0, 9, b"\xff", b'{"v": 1}'),
        KafkaValue("r", 1, 1, None, dl.model_dump_json().encode()),
    ]
    out = decode_values(items, readings_topic="r", received_at=NOW)
    assert out.readings == [rec]
    assert [d.reason for d in out.dead] == ["malformed_json"] + [UNDECODABLE_REASON] * 4
    assert out.dead[0].payload == dl.payload
    bad = out.dead[1]
    assert bad.mqtt_topic == "kafka:r"
    assert bad.device_id == "dev"
    assert bad.payload == b"\xff\xfe garbage"
    assert "partition 2 offset 3" in bad.detail
    assert bad.received_at == NOW
    assert [(u.partition, u.offset) for u in out.undecodable] == [(2, 3), (2, 4), (0, 9), (1, 1)]
