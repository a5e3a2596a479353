"""Pure decoding of Kafka record values into storable records; bad bytes never raise."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from adapters import ConsumedRecord
from wire import DeadLetterRecord, ReadingBatch

__all__ = [
    "UNDECODABLE_REASON",
    "DeadLetter",
    "DecodedBatch",
    "KafkaValue",
    "decode_values",
]

UNDECODABLE_REASON = "undecodable_record"
# Prefix of the pseudo MQTT topic under which undecodable Kafka records are dead-lettered.
KAFKA_TOPIC_PREFIX = "kafka:"
_DETAIL_CHARS = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead letter as stored: the raw bytes, where they came from and why they were refused.

    :class:`~wire.schemas.DeadLetterRecord` (the bridge's rejects) converts to this with
    :meth:`from_record`; the processor makes them directly for Kafka records it cannot decode.
    """

    mqtt_topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes
    received_at: datetime

    @classmethod
    def from_record(cls, record: DeadLetterRecord) -> DeadLetter:
        """The stored form of a bridge dead-letter record."""
        return cls(
            mqtt_topic=record.mqtt_topic,
            device_id=record.device_id,
            reason=record.reason.value,
            detail=record.detail,
            payload=record.payload,
            received_at=record.received_at,
        )

    @property
    def payload_sha256(self) -> bytes:
        """SHA-256 of the payload: with the topic, the identity of a dead letter."""
        return hashlib.sha256(self.payload).digest()


@dataclass(frozen=True, slots=True)
class KafkaValue:
    """A Kafka record without driver types (tests, benchmarks, replay tools)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


@dataclass(slots=True)
class DecodedBatch:
    """The result of :func:`decode_values`: readings, dead letters and undecodable records."""

    readings: list[ReadingBatch] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    undecodable: list[ConsumedRecord] = field(default_factory=list)


def _undecodable(item: ConsumedRecord, received_at: datetime, why: str) -> DeadLetter:
    device_id: str | None = None
    if item.key:
        try:
            device_id = item.key.decode("utf-8")[:200]
        except UnicodeDecodeError:
            device_id = None
    return DeadLetter(
        mqtt_topic=f"{KAFKA_TOPIC_PREFIX}{item.topic}",
        device_id=device_id,
        reason=UNDECODABLE_REASON,
        detail=f"partition {item.partition} offset {item.offset}: {why}"[:_DETAIL_CHARS],
        payload=item.value or b"",
        received_at=received_at,
    )


def decode_values(
    items: Iterable[ConsumedRecord], *, readings_topic: str, received_at: datetime
) -> DecodedBatch:
    """Decode Kafka values: readings-topic records as readings, the rest as dead letters.

    Args:
        items: the polled records.
        readings_topic: records from this topic are :class:`~ingest.ReadingBatch` values;
            every other topic carries :class:`DeadLetterRecord` JSON.
        received_at: the time stamped on dead letters made for undecodable records.

    Returns:
        The decoded batch; a record that does not decode becomes a dead letter with reason
        ``undecodable_record`` (and is listed in ``undecodable``). Never raises on bad input.
    """
    out = DecodedBatch()
    for item in items:
        raw = item.value
        if raw is None:
            out.dead.append(_undecodable(item, received_at, "empty value (tombstone)"))
            out.undecodable.append(item)
            continue
        try:
            if item.topic == readings_topic:
                out.readings.append(ReadingBatch.decode(raw))
            else:
                out.dead.append(DeadLetter.from_record(DeadLetterRecord.model_validate_json(raw)))
        except (ValidationError, ValueError) as exc:
            out.dead.append(_undecodable(item, received_at, str(exc)))
            out.undecodable.append(item)
    return out
