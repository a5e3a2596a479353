"""The Kafka adapter: error mapping, Java-compatible key partitioning, consumer heartbeats."""

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

from ghgwatch.errors import BrokerUnavailable, ConfigurationError, FatalError, GhgwatchError
from ingest import CachedKeyPartitioner, heartbeat_interval_ms, map_kafka_error


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


@pytest.mark.parametrize("session_timeout_ms", [3_001, 6_000, 9_000, 9_001, 10_000, 300_000])
def test_heartbeat_stays_below_a_third_of_the_session_timeout(session_timeout_ms: int) -> None:
    """Every consumer heartbeats at least three times per session, and at most every 3 s."""
    interval = heartbeat_interval_ms(session_timeout_ms)
    assert 1000 <= interval <= 3000
    assert 3 * interval < session_timeout_ms


def test_a_session_too_short_for_three_heartbeats_is_a_configuration_error() -> None:
    """A session timeout that would need sub-second heartbeats is refused, not used."""
    with pytest.raises(ConfigurationError):
        heartbeat_interval_ms(3_000)
