"""The Kafka adapter: error mapping for delivery futures and Java-compatible key partitioning."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner

from ghgwatch.errors import BrokerUnavailable, FatalError, GhgwatchError
from ingest import CachedKeyPartitioner, map_kafka_error


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (KafkaConnectionError("down"), BrokerUnavailable),
        (KafkaTimeoutError(), BrokerUnavailable),
        (UnknownTopicOrPartitionError(), BrokerUnavailable),
        (NotLeaderForPartitionError(), BrokerUnavailable),  # retriable
        (UnknownError(), BrokerUnavailable),  # a broker mid-restart answers -1
        (TimeoutError(), BrokerUnavailable),
        (ConnectionResetError(), BrokerUnavailable),
        (TopicAuthorizationFailedError(), FatalError),
        (RecordTooLargeError(), FatalError),
    ],
)
def test_delivery_errors_map_onto_the_error_tree(
    raised: Exception, expected: type[GhgwatchError]
) -> None:
    """What a delivery future fails with becomes a ghgwatch error, original chained."""
    mapped = map_kafka_error(raised, "produce")
    assert isinstance(mapped, expected)
    assert mapped.__cause__ is raised


def test_cached_partitioner_picks_the_same_partitions_as_the_java_compatible_default() -> None:
    """Remembering key hashes changes nothing: every key lands where murmur2 puts it."""
    cached = CachedKeyPartitioner(max_keys=50)
    default = DefaultPartitioner()
    partitions = list(range(6))
    for n in range(200):
        key = f"ordos-coal/buertai/t1-{n:04d}".encode()
        for _ in range(2):
            assert cached(key, partitions, partitions) == default(key, partitions, partitions)
    assert cached(None, partitions, [4]) == 4
