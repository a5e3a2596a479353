"""Readings batches: the columnar Kafka record, and validation of a whole receive batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from wire import (
    AcceptedMessage,
    ReadingBatch,
    ReadingFrame,
    RejectedMessage,
    epoch_us,
    validate_message,
    validate_messages,
)
from wire import validate as validate_module

ROOT = "ghg/v1"
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MINE = f"{ROOT}/mine/ordos-coal/buertai/gw-1/data"
CEMS = f"{ROOT}/cems/beifang/dalate/unit-3/data"


def _accepted(topic: str, body: object) -> ReadingBatch:
    result = validate_message(topic, json.dumps(body).encode(), NOW, root=ROOT)
    assert isinstance(result, AcceptedMessage), result
    return result.batch


def test_a_batch_survives_encode_and_decode_column_for_column() -> None:
    """What the bridge produces is what consumers read: header, times, metrics, flags."""
    batch = _accepted(
        CEMS,
        {
            "ts": "2026-11-25T15:59:00+08:00",
            "readings": [
                {"metric": "co2_pct_vol", "value": 11.8, "flag": "C"},
                {"metric": "flow_m3_h", "value": 1.52e6},
                {"metric": "co2_pct_vol", "value": 11.9, "ts": "2026-11-25T07:59:30.25Z"},
            ],
        },
    )
    again = ReadingBatch.decode(batch.encode())
    assert again.header == batch.header
    assert again.header.metrics == ("co2_pct_vol", "flow_m3_h")
    assert again.metric.tolist() == [0, 1, 0]
    assert again.value.tolist() == [11.8, 1.52e6, 11.9]
    assert bytes(again.flag) == b"CNN"
    t0 = epoch_us(datetime(2026, 11, 25, 7, 59, tzinfo=UTC))
    assert again.ts_us.tolist() == [t0, t0, t0 + 30_250_000]
    assert again.received_at == NOW
    assert again.to_record() == batch.to_record()


def test_one_device_shares_one_cached_header() -> None:
    """Messages of one device and metric set reuse one header object and its JSON."""
    body = {"ts": "2026-11-25T07:00:00Z", "metric": "ch4_pct_vol", "value": 0.4, "location": "T1"}
    a, b = _accepted(MINE, body), _accepted(MINE, dict(body, value=0.5))
    assert a.header is b.header
    assert ReadingBatch.decode(a.encode()).header is ReadingBatch.decode(b.encode()).header


@pytest.mark.parametrize("vector_min", [0, 10**6], ids=["numpy", "python"])
def test_validating_together_gives_the_verdicts_of_one_at_a_time(
    vector_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Good and bad messages mixed in one receive batch get exactly their own verdicts,
    whether the pass's checks run as numpy expressions or, for a few readings, in Python."""
    monkeypatch.setattr(validate_module, "VECTOR_MIN_READINGS", vector_min)
    monkeypatch.setattr(validate_module, "VECTOR_MIN_STRINGS", vector_min)
    bodies = [
        {"ts": "2026-11-25T07:00:00Z", "metric": "ch4_pct_vol", "value": 0.4, "location": "T1"},
        {"ts": "2026-11-25T07:00:00Z", "metric": "ch4_pct_vol", "value": 400, "location": "T1"},
        {"ts": 1764054000, "metric": "ch4_pct_vol", "value": 0.5, "location": "T1"},
        {"ts": "2026-11-25 07:00:01+00:00", "metric": "co_ppm", "value": 3, "location": "t0"},
        {"ts": "2026-11-25T09:00:00Z", "metric": "ch4_pct_vol", "value": 0.4, "location": "T1"},
        {
            "location": "upper_corner",
            "readings": [
                {"metric": "ch4_pct_vol", "value": 0.3, "ts": "2026-11-25T07:00:00Z"},
                {"metric": "CH4", "value": 0.3, "ts": "2026-11-25T07:00:01Z"},
            ],
        },
        {"readings": [{"metric": "ch4_pct_vol", "value": 0.3}]},
        {"ts": "2026-11-25T07:00:02Z", "metric": "ch4_pct_vol", "value": 0.4},
    ]
    messages = [(MINE, json.dumps(b).encode(), NOW) for b in bodies]
    together = validate_messages(messages, root=ROOT)
    alone = [validate_message(*m, root=ROOT) for m in messages]
    assert [type(v).__name__ for v in together] == [
        "AcceptedMessage", "RejectedMessage", "AcceptedMessage", "AcceptedMessage",
        "RejectedMessage", "RejectedMessage", "RejectedMessage", "RejectedMessage",
    ]  # fmt: skip
    for mine, own in zip(together, alone, strict=True):
        if isinstance(mine, RejectedMessage):
            assert isinstance(own, RejectedMessage)
            assert (mine.record.reason, mine.record.detail) == (
                own.record.reason,
                own.record.detail,
            )
        else:
            assert isinstance(own, AcceptedMessage)
            assert mine.record == own.record
    epoch = together[2]
    assert isinstance(epoch, AcceptedMessage)
    assert epoch.batch.ts_us.tolist() == [1764054000 * 1_000_000]
    reasons = [v.record.reason.value for v in together if isinstance(v, RejectedMessage)]
    assert reasons == [
        "out_of_range", "future_timestamp", "unknown_metric", "schema", "missing_location",
    ]  # fmt: skip


def test_a_frame_spreads_per_metric_ids_over_the_readings() -> None:
    """ReadingFrame asks once per message and metric, and maps every reading to its id."""
    a = _accepted(
        CEMS,
        {
            "ts": "2026-11-25T07:00:00Z",
            "readings": [
                {"metric": "load_mw", "value": 300},
                {"metric": "o2_pct_vol", "value": 6},
                {"metric": "load_mw", "value": 301, "ts": "2026-11-25T07:00:01Z"},
            ],
        },
    )
    b = _accepted(MINE, {"ts": "2026-11-25T07:00:00Z", "metric": "co_ppm", "value": 2,
                         "location": "T2"})  # fmt: skip
    asked: list[tuple[str, str]] = []

    def ids(batch: ReadingBatch, metric: str) -> int:
        asked.append((batch.device_id, metric))
        return len(asked) - 1

    frame = ReadingFrame.of([a, b])
    got = [asked[i] for i in frame.ids(ids).tolist()]
    unit, gw = "beifang/dalate/unit-3", "ordos-coal/buertai/gw-1"
    assert got == [(unit, "load_mw"), (unit, "o2_pct_vol"), (unit, "load_mw"), (gw, "co_ppm")]
    assert len(asked) == 3
    assert frame.value.tolist() == [300, 6, 301, 2]
    assert frame.per_reading(np.array([1, 2])).tolist() == [1, 1, 1, 2]
