"""wire: the contracts every service shares, pure data and no I/O.

The MQTT wire schemas and their validation (:mod:`wire.schemas`, :mod:`wire.validate`), the
topic scheme (:mod:`wire.topics`), the columnar Kafka record of readings (:mod:`wire.batch`),
timestamp parsing (:mod:`wire.timestamps`), the detection events (:mod:`wire.events`) and the
detector catalogue they name (:mod:`wire.detectors`).
Importing it loads pydantic and numpy, never a broker or database driver.
"""

from __future__ import annotations

from wire.batch import (
    BATCH_MAGIC,
    BATCH_VERSION,
    ReadingBatch,
    ReadingFrame,
    epoch_us,
    from_epoch_us,
)
from wire.detectors import (
    DETECTORS,
    KNOWN_DETECTORS,
    DetectorSpec,
    detector_spec,
    unknown_detector_message,
)
from wire.events import DetectionRecord, DetectionState, Severity, detection_id
from wire.schemas import (
    MAX_FUTURE_SKEW,
    MAX_PAYLOAD_BYTES,
    METRICS,
    MIN_TIMESTAMP,
    BatchPayload,
    DeadLetterRecord,
    DeviceStatus,
    Flag,
    MetricSpec,
    MineLocation,
    ReadingHeader,
    ReadingItem,
    ReadingRecord,
    RejectReason,
    SinglePayload,
    SourceKind,
    WireReading,
    safe_text,
)
from wire.timestamps import parse_rfc3339_us
from wire.topics import (
    DATA_CHANNEL,
    STATUS_CHANNEL,
    DeviceRef,
    data_subscription,
    parse_data_topic,
)
from wire.validate import (
    MAX_DEAD_TOPIC_CHARS,
    AcceptedMessage,
    RejectedMessage,
    validate_message,
    validate_messages,
)

__all__ = [
    "BATCH_MAGIC",
    "BATCH_VERSION",
    "DATA_CHANNEL",
    "DETECTORS",
    "KNOWN_DETECTORS",
    "MAX_DEAD_TOPIC_CHARS",
    "MAX_FUTURE_SKEW",
    "MAX_PAYLOAD_BYTES",
    "METRICS",
    "MIN_TIMESTAMP",
    "STATUS_CHANNEL",
    "AcceptedMessage",
    "BatchPayload",
    "DeadLetterRecord",
    "DetectionRecord",
    "DetectionState",
    "DetectorSpec",
    "DeviceRef",
    "DeviceStatus",
    "Flag",
    "MetricSpec",
    "MineLocation",
    "ReadingBatch",
    "ReadingFrame",
    "ReadingHeader",
    "ReadingItem",
    "ReadingRecord",
    "RejectReason",
    "RejectedMessage",
    "Severity",
    "SinglePayload",
    "SourceKind",
    "WireReading",
    "data_subscription",
    "detection_id",
    "detector_spec",
    "epoch_us",
    "from_epoch_us",
    "parse_data_topic",
    "parse_rfc3339_us",
    "safe_text",
    "unknown_detector_message",
    "validate_message",
    "validate_messages",
]
