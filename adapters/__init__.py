"""adapters: the shared edges to Kafka, PostgreSQL, Prometheus and the local machine.

The Kafka adapter and its error mapping (:mod:`adapters.kafka`), the offset checkpoint
(:mod:`adapters.checkpoint`), the one consumer loop every service runs
(:mod:`adapters.consumer_loop`), PostgreSQL error mapping (:mod:`adapters.pgerrors`), the wait
for a database at start (:mod:`adapters.pg`), each service's metrics registry and endpoint
(:mod:`adapters.metrics`) and local ports (:mod:`adapters.ports`). Driver errors are translated
onto :mod:`core.errors` here and nowhere else.
"""

from __future__ import annotations

from adapters.checkpoint import Checkpoint, CommitOnRevoke
from adapters.consumer_loop import (
    Batch,
    ConsumedRecord,
    ConsumerLoop,
    ConsumerService,
    LoopStats,
)
from adapters.kafka import (
    CachedKeyPartitioner,
    OutgoingRecord,
    RecordProducer,
    client_options,
    delivery_error,
    ensure_topics,
    heartbeat_interval_ms,
    kafka_errors,
    make_consumer,
    make_producer,
    map_kafka_error,
    started_client,
)
from adapters.metrics import BATCH_SECONDS_BUCKETS_S, LagGauge, MetricsServer, ServiceMetrics
from adapters.pg import redact_url, start_wait_s, wait_for_database
from adapters.pgerrors import map_pg_error, pg_errors
from adapters.ports import free_port, pid_alive, port_is_free

__all__ = [
    "BATCH_SECONDS_BUCKETS_S",
    "Batch",
    "CachedKeyPartitioner",
    "Checkpoint",
    "CommitOnRevoke",
    "ConsumedRecord",
    "ConsumerLoop",
    "ConsumerService",
    "LagGauge",
    "LoopStats",
    "MetricsServer",
    "OutgoingRecord",
    "RecordProducer",
    "ServiceMetrics",
    "client_options",
    "delivery_error",
    "ensure_topics",
    "free_port",
    "heartbeat_interval_ms",
    "kafka_errors",
    "make_consumer",
    "make_producer",
    "map_kafka_error",
    "map_pg_error",
    "pg_errors",
    "pid_alive",
    "port_is_free",
    "redact_url",
    "start_wait_s",
    "started_client",
    "wait_for_database",
]
