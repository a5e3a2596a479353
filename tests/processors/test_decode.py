"""Decoding Kafka values never raises: bad records become undecodable_record dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

from proc_helpers import dead_letter, mixed_records

from processors.storage import UNDECODABLE_REASON, KafkaValue, decode_values
from wire import ReadingBatch

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_readings_dead_letters_and_garbage_are_sorted_out() -> None:
    """Valid records decode by topic; garbage, tombstones and wrong shapes are dead letters."""
    rec = mixed_records(1, 1)[0]
    dl = dead_letter(1)
    items = [
        KafkaValue("r", 0, 0, b"k", ReadingBatch.from_record(rec).encode()),
        KafkaValue("d", 1, 7, None, dl.model_dump_json().encode()),
        KafkaValue("r", 2, 3, b"dev", b"\xff\xfe garbage"),
        KafkaValue("r", 2, 4, None, None),
        KafkaValue("d", 0, 9, b"\xff", b'{"v": 1}'),
        KafkaValue("r", 1, 1, None, dl.model_dump_json().encode()),
    ]
    out = decode_values(items, readings_topic="r", received_at=NOW)
    assert [b.to_record() for b in out.readings] == [rec]
    assert [d.reason for d in out.dead] == ["malformed_json"] + [UNDECODABLE_REASON] * 4
    assert out.dead[0].payload == dl.payload
    bad = out.dead[1]
    assert bad.mqtt_topic == "kafka:r"
    assert bad.device_id == "dev"
    assert bad.payload == b"\xff\xfe garbage"
    assert "partition 2 offset 3" in bad.detail
    assert bad.received_at == NOW
    assert [(u.partition, u.offset) for u in out.undecodable] == [(2, 3), (2, 4), (0, 9), (1, 1)]


def test_format_1_records_of_older_bridges_still_decode() -> None:
    """A JSON ReadingRecord (format 1) decodes to the same readings as its format-2 batch."""
    recs = mixed_records(2, 2)
    items = [KafkaValue("r", 0, i, b"k", r.model_dump_json().encode()) for i, r in enumerate(recs)]
    out = decode_values(items, readings_topic="r", received_at=NOW)
    assert not out.dead
    assert [b.to_record() for b in out.readings] == recs
    again = [ReadingBatch.decode(b.encode()).to_record() for b in out.readings]
    assert again == recs


def test_corrupt_format_2_records_are_dead_lettered_with_what_is_wrong() -> None:
    """Truncated columns, unknown versions, flags and metric indices never reach storage."""
    good = ReadingBatch.from_record(mixed_records(1, 1)[0]).encode()
    n = len(mixed_records(1, 1)[0].readings)
    flag_at = len(good) - n
    bad_flag = good[:flag_at] + b"Q" + good[flag_at + 1 :]
    metric_at = len(good) - 3 * n
    bad_metric = good[:metric_at] + b"\x09\x00" + good[metric_at + 2 :]
    cases = {
        "truncated": good[:-1],
        "version": good[:4] + b"\x07" + good[5:],
        "flag": bad_flag,
        "metric": bad_metric,
        "magic": b"XXXX" + good[4:],
    }
    items = [KafkaValue("r", 0, i, b"k", v) for i, v in enumerate(cases.values())]
    out = decode_values(items, readings_topic="r", received_at=NOW)
    assert not out.readings
    details = [d.detail for d in out.dead]
    assert len(details) == len(cases)
    for detail, word in zip(details, ["bytes follow", "version", "flag", "metric", "batch"],
                            strict=True):  # fmt: skip
        assert word in detail, detail
