"""ingest: the MQTT session and the MQTT -> Kafka bridge.

The wire contract it validates against lives in :mod:`wire`, the Kafka adapter it produces
through in :mod:`adapters`.
"""

from __future__ import annotations

from ingest.bridge import DRAIN_TIMEOUT_S, Bridge
from ingest.exceptions import CredentialsRefused, MqttUnavailable, SessionClosed
from ingest.metrics import ACK_LATENCY_BUCKETS_S, BridgeMetrics, BridgeStats
from ingest.mqtt import InboundMessage, MqttSession, Subscription, mqtt_errors

__all__ = [
    "ACK_LATENCY_BUCKETS_S",
    "DRAIN_TIMEOUT_S",
    "Bridge",
    "BridgeMetrics",
    "BridgeStats",
    "CredentialsRefused",
    "InboundMessage",
    "MqttSession",
    "MqttUnavailable",
    "SessionClosed",
    "Subscription",
    "mqtt_errors",
]
