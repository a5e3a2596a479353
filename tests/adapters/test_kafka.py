"""The Kafka adapter: error mapping, Java-compatible key partitioning, consumer heartbeats."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    ConsumerStoppedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner

from adapters import (
    CachedKeyPartitioner,
    RecordProducer,
    delivery_error,
    ensure_topics,
    heartbeat_interval_ms,
    make_consumer,
    map_kafka_error,
    started_client,
)
from adapters.ports import free_port
from core.errors import BrokerUnavailable, ConfigurationError, FatalError, GhgwatchError
from core.settings import KafkaSettings, Settings
from ghgwatch.embedded import start_tansu


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


async def test_a_consumer_whose_start_failed_is_stopped_and_the_error_mapped() -> None:
    """No broker: BrokerUnavailable, and the half-started consumer holds nothing open."""
    cfg = KafkaSettings(request_timeout_s=5.0)
    consumer = make_consumer(
        cfg,
        f"127.0.0.1:{free_port()}",
        group_id="nobody",
        session_timeout_ms=10_000,
        max_poll_interval_ms=300_000,
    )
    with pytest.raises(BrokerUnavailable):
        async with started_client(consumer, "consumer", start_timeout_s=10, stop_timeout_s=10):
            pytest.fail("the block must not run without a broker")
    with pytest.raises(ConsumerStoppedError):
        await consumer.getmany(timeout_ms=0)


async def test_a_started_consumer_is_stopped_when_the_block_ends(settings: Settings) -> None:
    """Inside the block the consumer reaches the broker; after it, the consumer is closed."""
    consumer = make_consumer(
        settings.kafka,
        settings.kafka_bootstrap(),
        group_id=settings.processor.group_id,
        session_timeout_ms=settings.processor.session_timeout_ms,
        max_poll_interval_ms=settings.processor.max_poll_interval_ms,
    )
    async with started_client(consumer, "consumer", start_timeout_s=30, stop_timeout_s=30):
        assert isinstance(await consumer.topics(), set)
    with pytest.raises(ConsumerStoppedError):
        await consumer.getmany(timeout_ms=0)


async def test_grouped_sends_put_each_record_on_its_keys_partition_in_order(
    settings: Settings,
) -> None:
    """One batch per partition still means keyed by device: every record lands where the
    default partitioner puts its key, each device's records in the order they were sent."""
    k = settings.kafka
    await ensure_topics(k, settings.kafka_bootstrap(), [k.readings_topic])
    keys = [f"ordos-coal/buertai/t1-{n:04d}".encode() for n in range(40)]
    sent = [(k.readings_topic, keys[i % 40], f"{i}".encode()) for i in range(300)]
    producer = RecordProducer(k, settings.kafka_bootstrap())
    await producer.start()
    try:
        groups: list[tuple[object, list[int]]] = []
        for offset, part in ((0, sent[:170]), (170, sent[170:])):
            futures, error = await producer.send_grouped(part)
            assert error is None
            groups.extend((f, [offset + i for i in members]) for f, members in futures)
            for future, _members in futures:
                await asyncio.wait_for(future, 30)
    finally:
        await producer.stop(timeout_s=10)
    assert sorted(i for _f, members in groups for i in members) == list(range(300))
    assert len(groups) <= 2 * k.partitions  # one batch per partition per call

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap(), auto_offset_reset="earliest"
    )
    async with started_client(consumer, "consumer", start_timeout_s=30, stop_timeout_s=30):
        tps = [TopicPartition(k.readings_topic, p) for p in range(k.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[tuple[int, bytes, int]] = []
        async with asyncio.timeout(30):
            while len(got) < 300:
                batch = await consumer.getmany(timeout_ms=500)
                got.extend((m.partition, m.key, int(m.value)) for ms in batch.values() for m in ms)
    default = DefaultPartitioner()
    partitions = list(range(k.partitions))
    for partition, key, _value in got:
        assert partition == default(key, partitions, partitions)
    for key in keys:
        values = [v for _p, kk, v in got if kk == key]
        assert values == sorted(values)
        assert len(values) == len([s for s in sent if s[1] == key])


async def test_delivery_error_reads_a_finished_produce_future() -> None:
    """Delivered: None; cancelled: the broker is unavailable; a driver error: its mapping."""
    loop = asyncio.get_running_loop()
    ok, cancelled, failed = loop.create_future(), loop.create_future(), loop.create_future()
    ok.set_result(None)
    cancelled.cancel()
    failed.set_exception(KafkaConnectionError("refused"))
    assert delivery_error(ok) is None
    assert isinstance(delivery_error(cancelled), BrokerUnavailable)
    assert isinstance(delivery_error(failed), BrokerUnavailable)


async def test_an_abandoned_producer_lets_nothing_reach_a_broker_that_came_back_without_its_topic(
    settings: Settings, tmp_path: Path
) -> None:
    """A record queued while the cluster is down fails at once on abandon, is not retried
    behind the caller's back against the broker that comes back empty (tansu confirms such a
    write to a topic it no longer has), and the reconnected producer delivers again."""
    kafka = await start_tansu(tmp_path / "tansu-1", port=0)
    bootstrap = f"127.0.0.1:{kafka.port}"
    cfg = settings.kafka.model_copy(update={"request_timeout_s": 30.0})
    topic = "abandon-check"
    await ensure_topics(cfg, bootstrap, [topic])
    producer = RecordProducer(cfg, bootstrap)
    await producer.start()
    try:
        (before, _), *_ = (await producer.send_grouped([(topic, b"k", b"before")]))[0]
        await asyncio.wait_for(before, 30)
        await kafka.stop()
        handed, error = await producer.send_grouped([(topic, b"k", b"queued")])
        assert error is None  # metadata is cached: it is queued, not refused
        producer.abandon("cluster unreachable")
        queued = handed[0][0]
        await asyncio.wait([queued], timeout=5)
        assert isinstance(delivery_error(queued), BrokerUnavailable)
        _, refused = await producer.send_grouped([(topic, b"k", b"in between")])
        assert isinstance(refused, BrokerUnavailable)

        kafka = await start_tansu(tmp_path / "tansu-2", port=kafka.port)
        await asyncio.sleep(1.0)  # time for an old retry to reach it, were one left
        await producer.reconnect([topic])
        assert not producer.abandoned
        await _deliver(producer, (topic, b"k", b"after"))
        values = await _values(bootstrap, topic)
    finally:
        await producer.stop(timeout_s=10)
        await kafka.stop()
    assert values == [b"after"]


async def _values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = sorted(await consumer._client._wait_on_metadata(topic))
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        got: list[bytes] = []
        for _ in range(5):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                got.extend(r.value for r in records if r.value is not None)
        return got
    finally:
        await consumer.stop()


async def _deliver(producer: RecordProducer, record: tuple[str, bytes, bytes]) -> None:
    """Send until Kafka confirms, retrying what the adapter calls transient, as its callers
    do (tansu answers UnknownError to the first produce right after a CreateTopics)."""
    for _ in range(20):
        handed, error = await producer.send_grouped([record])
        if error is None:
            await asyncio.wait([handed[0][0]], timeout=30)
            error = delivery_error(handed[0][0])
            if error is None:
                return
        assert isinstance(error, BrokerUnavailable), error
        await asyncio.sleep(0.2)
    raise AssertionError(f"not delivered: {error}")
