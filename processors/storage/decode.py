"""Pure decoding of Kafka record values into storable records; bad bytes never raise.

Decoded records remember where they came from (:class:`KafkaBatches` for readings,
:attr:`DeadLetter.origin` for dead letters), so a record the database refuses later can be
quarantined with its Kafka topic, partition and offset (see :mod:`processors.storage.writer`).
Text taken from a record for a dead letter (its key, an error message) is escaped with
:func:`~wire.safe_text`: PostgreSQL refuses NUL and lone surrogates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from adapters import ConsumedRecord
from wire import DeadLetterRecord, ReadingBatch, safe_text

__all__ = [
    "UNDECODABLE_REASON",
    "DeadLetter",
    "DecodedBatch",
    "KafkaBatches",
    "KafkaValue",
    "decode_values",
]

UNDECODABLE_REASON = "undecodable_record"
# Prefix of the pseudo MQTT topic under which undecodable Kafka records are dead-lettered.
KAFKA_TOPIC_PREFIX = "kafka:"
_DETAIL_CHARS = 1000
_DEVICE_ID_CHARS = 200


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
    origin: ConsumedRecord | None = field(default=None, compare=False, repr=False)
    """The Kafka record it was read from, when it was (not stored; names a quarantine)."""

    @classmethod
    def from_record(
        cls, record: DeadLetterRecord, origin: ConsumedRecord | None = None
    ) -> DeadLetter:
        """The stored form of a bridge dead-letter record."""
        return cls(
            mqtt_topic=record.mqtt_topic,
            device_id=record.device_id,
            reason=record.reason.value,
            detail=record.detail,
            payload=record.payload,
            received_at=record.received_at,
            origin=origin,
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


class KafkaBatches(list[ReadingBatch]):
    """Decoded readings batches that remember the Kafka record each came from.

    To every caller a plain list; :meth:`ReadingStore.write
    <processors.storage.ReadingStore.write>` reads :attr:`records` (same order) to name the
    topic, partition and offset of a batch it must quarantine.
    """

    __slots__ = ("records",)

    def __init__(self) -> None:
        super().__init__()
        self.records: list[ConsumedRecord] = []

    def add(self, batch: ReadingBatch, record: ConsumedRecord) -> None:
        """Append ``batch``, read from ``record``."""
        self.append(batch)
        self.records.append(record)


@dataclass(slots=True)
class DecodedBatch:
    """The result of :func:`decode_values`: readings, dead letters and undecodable records."""

    readings: KafkaBatches = field(default_factory=KafkaBatches)
    dead: list[DeadLetter] = field(default_factory=list)
    undecodable: list[ConsumedRecord] = field(default_factory=list)


def _undecodable(item: ConsumedRecord, received_at: datetime, why: str) -> DeadLetter:
    device_id: str | None = None
    if item.key:
        try:
            device_id = safe_text(item.key.decode("utf-8"))[:_DEVICE_ID_CHARS]
        except UnicodeDecodeError:
            device_id = None
    return DeadLetter(
        mqtt_topic=safe_text(f"{KAFKA_TOPIC_PREFIX}{item.topic}"),
        device_id=device_id,
        reason=UNDECODABLE_REASON,
        detail=safe_text(f"partition {item.partition} offset {item.offset}: {why}")[:_DETAIL_CHARS],
        payload=item.value or b"",
        received_at=received_at,
        origin=item,
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
                out.readings.add(ReadingBatch.decode(raw), item)
            else:
                record = DeadLetterRecord.model_validate_json(raw)
                out.dead.append(DeadLetter.from_record(record, item))
        except (ValidationError, ValueError) as exc:
            out.dead.append(_undecodable(item, received_at, str(exc)))
            out.undecodable.append(item)
    return out
