"""ingest: the wire contract, the MQTT session and the MQTT -> Kafka bridge.

Other packages import from here only: the bridge (:class:`Bridge`), the wire schemas
(:class:`ReadingRecord`, :class:`DeadLetterRecord`, ...), the topic scheme (:class:`DeviceRef`)
and the Kafka adapter (:func:`ensure_topics`, :func:`kafka_errors`, ...).
"""

from __future__ import annotations

from ingest.batch import (
    BATCH_MAGIC,
    BATCH_VERSION,
    ReadingBatch,
    ReadingFrame,
    epoch_us,
    from_epoch_us,
)
from ingest.bridge import DRAIN_TIMEOUT_S, Bridge
from ingest.exceptions import CredentialsRefused, MqttUnavailable, SessionClosed
from ingest.kafka import (
    CachedKeyPartitioner,
    OutgoingRecord,
    RecordProducer,
    client_options,
    ensure_topics,
    heartbeat_interval_ms,
    kafka_errors,
    make_consumer,
    make_producer,
    map_kafka_error,
    started_client,
)
from ingest.metrics import ACK_LATENCY_BUCKETS_S, BridgeMetrics, BridgeStats, MetricsServer
from ingest.mqtt import InboundMessage, MqttSession, Subscription, mqtt_errors
from ingest.schemas import (
    MAX_FUTURE_SKEW,
    MAX_PAYLOAD_BYTES,
    METRICS,
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
)
from ingest.timestamps import parse_rfc3339_us
from ingest.topics import (
    DATA_CHANNEL,
    STATUS_CHANNEL,
    DeviceRef,
    data_subscription,
    parse_data_topic,
)
from ingest.validate import (
    AcceptedMessage,
    RejectedMessage,
    validate_message,
    validate_messages,
)

__all__ = [
    "ACK_LATENCY_BUCKETS_S",
    "BATCH_MAGIC",
    "BATCH_VERSION",
    "DATA_CHANNEL",
    "DRAIN_TIMEOUT_S",
    "MAX_FUTURE_SKEW",
    "MAX_PAYLOAD_BYTES",
    "METRICS",
    "STATUS_CHANNEL",
    "AcceptedMessage",
    "BatchPayload",
    "Bridge",
    "BridgeMetrics",
    "BridgeStats",
    "CachedKeyPartitioner",
    "CredentialsRefused",
    "DeadLetterRecord",
    "DeviceRef",
    "DeviceStatus",
    "Flag",
    "InboundMessage",
    "MetricSpec",
    "MetricsServer",
    "MineLocation",
    "MqttSession",
    "MqttUnavailable",
    "OutgoingRecord",
    "ReadingBatch",
    "ReadingFrame",
    "ReadingHeader",
    "ReadingItem",
    "ReadingRecord",
    "RecordProducer",
    "RejectReason",
    "RejectedMessage",
    "SessionClosed",
    "SinglePayload",
    "SourceKind",
    "Subscription",
    "WireReading",
    "client_options",
    "data_subscription",
    "ensure_topics",
    "epoch_us",
    "from_epoch_us",
    "heartbeat_interval_ms",
    "kafka_errors",
    "make_consumer",
    "make_producer",
    "map_kafka_error",
    "mqtt_errors",
    "parse_data_topic",
    "parse_rfc3339_us",
    "started_client",
    "validate_message",
    "validate_messages",
]
