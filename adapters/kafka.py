"""Kafka adapter: client options, topic creation and the one place aiokafka errors are mapped."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar, cast

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import murmur2

from core.errors import BrokerUnavailable, ConfigurationError, FatalError, GhgwatchError
from core.settings import KafkaSettings

__all__ = [
    "CachedKeyPartitioner",
    "OutgoingRecord",
    "RecordProducer",
    "client_options",
    "delivery_error",
    "ensure_topics",
    "heartbeat_interval_ms",
    "kafka_errors",
    "make_consumer",
    "make_producer",
    "map_kafka_error",
    "started_client",
]

log = structlog.get_logger(__name__)

ADMIN_TIMEOUT_S = 30.0
KAFKA_RETRY_AFTER_S = 2.0
# Heartbeats carry rebalance news: a member learns of a join (and rejoins) this fast.
HEARTBEAT_INTERVAL_MS = 3000
# Faster heartbeats only load the coordinator; a session this short is a misconfiguration.
HEARTBEAT_MIN_MS = 1000

# Errors that mean "the cluster is not reachable or not ready right now". UnknownError (-1)
# is what a broker answers while it is (re)creating a partition (tansu does right after a
# restart); treating it as fatal would stop the bridge exactly when Kafka comes back.
_TRANSIENT: tuple[type[BaseException], ...] = (
    KafkaConnectionError,
    UnknownError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    asyncio.TimeoutError,
    OSError,
)


@contextlib.contextmanager
def kafka_errors(action: str) -> Iterator[None]:
    """Translate aiokafka and socket errors raised inside the block onto ghgwatch's tree.

    Args:
        action: what was being done, for the message (e.g. ``"produce"``).

    Raises:
        BrokerUnavailable: the cluster cannot be reached or timed out (retry later).
        FatalError: any other Kafka error (misconfiguration, authorisation).
    """
    try:
        yield
    except _TRANSIENT as exc:
        raise BrokerUnavailable(
            f"kafka {action}: {type(exc).__name__}: {exc}", retry_after=KAFKA_RETRY_AFTER_S
        ) from exc
    except KafkaError as exc:
        if getattr(exc, "retriable", False):
            raise BrokerUnavailable(
                f"kafka {action}: {type(exc).__name__}: {exc}", retry_after=KAFKA_RETRY_AFTER_S
            ) from exc
        raise FatalError(f"kafka {action}: {type(exc).__name__}: {exc}") from exc


def client_options(cfg: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """Connection options shared by producers, consumers and admin clients."""
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "request_timeout_ms": int(cfg.request_timeout_s * 1000),
        "security_protocol": cfg.security_protocol,
    }
    if cfg.sasl_mechanism:
        if cfg.sasl_username is None or cfg.sasl_password is None:
            raise ConfigurationError("kafka.sasl_mechanism needs sasl_username and sasl_password")
        opts.update(
            sasl_mechanism=cfg.sasl_mechanism,
            sasl_plain_username=cfg.sasl_username,
            sasl_plain_password=cfg.sasl_password.get_secret_value(),
        )
    return opts


def make_producer(
    cfg: KafkaSettings, bootstrap: str, *, partitioner: Any | None = None
) -> AIOKafkaProducer:
    """A producer that only reports success once every in-sync replica has the record.

    Args:
        cfg: the ``kafka`` settings section.
        bootstrap: host:port[,host:port].
        partitioner: optional ``partitioner(key, all_partitions, available)``; the default is
            aiokafka's murmur2 partitioner (the Java client's).
    """
    extra: dict[str, Any] = {} if partitioner is None else {"partitioner": partitioner}
    return AIOKafkaProducer(
        **client_options(cfg, bootstrap),
        acks="all",
        linger_ms=cfg.linger_ms,
        max_batch_size=cfg.max_batch_bytes,
        max_request_size=max(cfg.max_batch_bytes, 1_048_576),
        enable_idempotence=cfg.enable_idempotence,
        **extra,
    )


def heartbeat_interval_ms(session_timeout_ms: int) -> int:
    """The heartbeat interval every ghgwatch consumer uses for a given session timeout.

    At most ``HEARTBEAT_INTERVAL_MS`` and strictly below a third of the session timeout, so
    that the coordinator sees at least three heartbeats before it drops a member.

    Args:
        session_timeout_ms: the consumer group's session timeout.

    Returns:
        ``min(HEARTBEAT_INTERVAL_MS, (session_timeout_ms - 1) // 3)``.

    Raises:
        ConfigurationError: that would be below ``HEARTBEAT_MIN_MS`` (session too short).
    """
    interval = min(HEARTBEAT_INTERVAL_MS, (session_timeout_ms - 1) // 3)
    if interval < HEARTBEAT_MIN_MS:
        raise ConfigurationError(
            f"session_timeout_ms={session_timeout_ms} leaves a heartbeat below"
            f" {HEARTBEAT_MIN_MS} ms; use at least {3 * HEARTBEAT_MIN_MS + 1}"
        )
    return interval


def make_consumer(
    cfg: KafkaSettings,
    bootstrap: str,
    *,
    group_id: str,
    session_timeout_ms: int,
    max_poll_interval_ms: int,
    topics: Sequence[str] = (),
    max_partition_fetch_bytes: int | None = None,
    fetch_max_wait_ms: int | None = None,
) -> AIOKafkaConsumer:
    """A consumer-group member that commits only when told to, reading from the earliest offset.

    Auto-commit is off (offsets are committed after the work is durable) and a group without
    committed offsets starts at the beginning of each partition. The heartbeat interval is
    :func:`heartbeat_interval_ms` of the session timeout.

    Args:
        cfg: the ``kafka`` settings section.
        bootstrap: host:port[,host:port].
        group_id: the consumer group.
        session_timeout_ms: the group session timeout.
        max_poll_interval_ms: the longest allowed gap between polls.
        topics: topics to subscribe to now; leave empty to ``subscribe`` later with a listener.
        max_partition_fetch_bytes: per-partition fetch limit; None keeps aiokafka's default.
        fetch_max_wait_ms: broker-side fetch wait; None keeps aiokafka's default.

    Returns:
        The consumer, not started.

    Raises:
        ConfigurationError: SASL settings incomplete, or the session timeout too short.
    """
    extra: dict[str, Any] = {}
    if max_partition_fetch_bytes is not None:
        extra["max_partition_fetch_bytes"] = max_partition_fetch_bytes
    if fetch_max_wait_ms is not None:
        extra["fetch_max_wait_ms"] = fetch_max_wait_ms
    return AIOKafkaConsumer(
        *topics,
        **client_options(cfg, bootstrap),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=max_poll_interval_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms(session_timeout_ms),
        **extra,
    )


class _StartStop(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


_ClientT = TypeVar("_ClientT", bound=_StartStop)


@contextlib.asynccontextmanager
async def started_client(
    client: _ClientT, name: str, *, start_timeout_s: float, stop_timeout_s: float
) -> AsyncIterator[_ClientT]:
    """Start an aiokafka consumer or producer for the block and stop it after, both bounded.

    A client whose start failed still holds sockets and tasks: it is stopped (bounded, its
    own errors suppressed) before the start error is raised.

    Args:
        client: an ``AIOKafkaConsumer`` or ``AIOKafkaProducer``, not started.
        name: what it is, for error messages (e.g. ``"consumer"``).
        start_timeout_s: the longest wait for ``start()``.
        stop_timeout_s: the longest wait for ``stop()``.

    Raises:
        BrokerUnavailable: start or stop did not reach the cluster in time.
        FatalError: the cluster refused us (e.g. authentication).
    """
    try:
        with kafka_errors(f"start {name}"):
            async with asyncio.timeout(start_timeout_s):
                await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(stop_timeout_s):
                await client.stop()
        raise
    try:
        yield client
    finally:
        with kafka_errors(f"stop {name}"):
            async with asyncio.timeout(stop_timeout_s):
                await client.stop()


class CachedKeyPartitioner:
    """The Java client's murmur2 key partitioning, with each key's hash computed once.

    aiokafka hashes in pure Python on every send; device ids repeat endlessly, so the bridge
    remembers up to ``max_keys`` of them. Partitions chosen are identical to the default's.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        """Pick the partition for ``key`` (random among available ones when it is None)."""
        if key is None:
            return random.choice(available or all_partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._max_keys:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


async def ensure_topics(cfg: KafkaSettings, bootstrap: str, topics: Iterable[str]) -> None:
    """Create the given topics with the configured partitions if they do not exist yet.

    Raises:
        BrokerUnavailable: the cluster could not be reached within ``ADMIN_TIMEOUT_S``.
    """
    wanted = sorted(set(topics))
    admin = AIOKafkaAdminClient(**client_options(cfg, bootstrap))
    with kafka_errors("create topics"):
        async with asyncio.timeout(ADMIN_TIMEOUT_S):
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                missing = [t for t in wanted if t not in existing]
                if missing:
                    new = [NewTopic(t, cfg.partitions, cfg.replication_factor) for t in missing]
                    with contextlib.suppress(TopicAlreadyExistsError):
                        await admin.create_topics(new)
                    log.info("kafka topics created", topics=missing, partitions=cfg.partitions)
            finally:
                await admin.close()


def map_kafka_error(exc: BaseException, action: str) -> GhgwatchError:
    """The ghgwatch error :func:`kafka_errors` would raise for ``exc`` (for futures' errors).

    Args:
        exc: an exception taken from a delivery future or an aiokafka call.
        action: what was being done, for the message.

    Returns:
        ``exc`` itself when it already is a ghgwatch error, else its mapping.
    """
    if isinstance(exc, GhgwatchError):
        return exc
    try:
        with kafka_errors(action):
            raise exc
    except GhgwatchError as mapped:
        return mapped
    except BaseException:  # pragma: no cover - kafka_errors maps every KafkaError/OSError
        return FatalError(f"kafka {action}: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")  # pragma: no cover


def delivery_error(future: asyncio.Future[Any]) -> GhgwatchError | None:
    """What a finished produce future says: None when Kafka has the records, else the
    ghgwatch error (a cancelled send counts as the broker being unavailable)."""
    if future.cancelled():
        return BrokerUnavailable("kafka produce cancelled")
    raw = future.exception()
    return None if raw is None else map_kafka_error(raw, "produce")


OutgoingRecord = tuple[str, bytes | None, bytes]
"""One record to produce: (topic, key, value)."""


def _fail_queued(producer: AIOKafkaProducer, exc: KafkaError) -> None:
    """Fail every batch ``producer`` holds (queued or on the wire) with ``exc``, at once.

    aiokafka has no public call for it; its accumulator's ``fail_all`` is what the producer
    itself calls when its sender dies, and it leaves the producer refusing new records. It
    also fails each batch's drain waiter, which nobody awaits: those are read here so asyncio
    does not log them as lost. (aiokafka is pinned below the next minor release for this.)
    """
    accumulator = producer._message_accumulator  # noqa: SLF001
    batches = [b for queue in accumulator._batches.values() for b in queue]  # noqa: SLF001
    batches.extend(accumulator._pending_batches)  # noqa: SLF001
    accumulator.fail_all(exc)
    for batch in batches:
        waiter = batch._drain_waiter  # noqa: SLF001
        if waiter.done() and not waiter.cancelled():
            waiter.exception()


class RecordProducer:
    """An ``acks=all`` producer of raw key/value bytes; every call bounded and error-mapped.

    A producer that failed to start is closed and not reused: build a new one to retry.
    After the cluster was unreachable, :meth:`abandon` gives up what the old connection still
    holds and :meth:`reconnect` starts afresh (see there why).
    """

    def __init__(self, cfg: KafkaSettings, bootstrap: str) -> None:
        self._cfg, self._bootstrap = cfg, bootstrap
        self._partitioner = CachedKeyPartitioner()
        self._producer = make_producer(cfg, bootstrap, partitioner=self._partitioner)
        self._timeout_s = cfg.request_timeout_s
        self._abandoned = False

    @property
    def abandoned(self) -> bool:
        """True from :meth:`abandon` until a :meth:`reconnect` succeeded."""
        return self._abandoned

    def abandon(self, reason: str) -> None:
        """Fail every record handed over and not yet confirmed, now, and stop using this
        connection: each delivery future fails (mapped: :class:`BrokerUnavailable`), so the
        caller re-sends those records through :meth:`reconnect`'s fresh connection.

        Left alone, aiokafka retries its queued batches against whatever answers at the old
        address, with the old metadata, before the caller could check its topics. A broker
        that came back empty (tansu keeps topics in memory only) confirms such a write to a
        topic it no longer has and loses it when the topic is created (measured: acked by the
        new broker, absent from its topic list, gone after CreateTopics; issue 9 finding 10).
        A record failed here may still have reached Kafka: it is re-sent, a duplicate at
        worst, which the store keys away.
        """
        if self._abandoned:
            return
        self._abandoned = True
        _fail_queued(self._producer, KafkaConnectionError(reason))

    async def reconnect(self, topics: Iterable[str]) -> None:
        """After :meth:`abandon`: create ``topics`` where missing, then close the old
        connection and connect a new producer (fresh metadata, nothing queued), so nothing is
        produced before the topics exist. Does nothing when not abandoned.

        Raises:
            BrokerUnavailable: the cluster cannot be reached; still abandoned, call again.
            FatalError: the cluster refused us.
        """
        if not self._abandoned:
            return
        await ensure_topics(self._cfg, self._bootstrap, topics)
        await self.stop(timeout_s=self._timeout_s)
        self._producer = make_producer(self._cfg, self._bootstrap, partitioner=self._partitioner)
        await self.start()
        self._abandoned = False

    async def start(self) -> None:
        """Connect and fetch cluster metadata.

        Raises:
            BrokerUnavailable: the cluster cannot be reached within the request timeout.
            FatalError: the cluster refused us (e.g. authentication).
        """
        try:
            with kafka_errors("start producer"):
                async with asyncio.timeout(self._timeout_s):
                    await self._producer.start()
        except BaseException:
            await self.stop(timeout_s=self._timeout_s)
            raise

    async def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        """Hand one record to the producer's batching; the future resolves once Kafka has it.

        Args:
            topic: destination topic.
            key: partitioning key (the device id), or None.
            value: the serialized record.

        Returns:
            The delivery future; map its exception with :func:`map_kafka_error`.

        Raises:
            BrokerUnavailable: metadata or buffer space did not come within the request timeout.
            FatalError: a non-retriable Kafka error (unknown configuration, authorisation).
        """
        with kafka_errors("produce"):
            async with asyncio.timeout(self._timeout_s):
                return cast("asyncio.Future[Any]", await self._producer.send(topic, value, key=key))

    async def send_grouped(
        self, records: Sequence[OutgoingRecord]
    ) -> tuple[list[tuple[asyncio.Future[Any], list[int]]], GhgwatchError | None]:
        """Hand records to Kafka as one batch per (topic, partition), all under one timeout.

        Each record keeps its key and lands on the partition its key picks (the same murmur2
        choice as :meth:`send`), in the given order within its partition. aiokafka's
        per-record path builds a future per record and resolves each on delivery; here the
        whole batch has one, which at tens of thousands of messages a second is the difference
        between the bridge keeping up or not.

        Args:
            records: (topic, key, value) triples.

        Returns:
            The delivery future of each batch handed over, with the indices (into
            ``records``) of the records it carries, and the error that stopped the rest, or
            None when every record was handed over.
        """
        groups: dict[tuple[str, int], list[int]] = {}
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        producer = self._producer
        try:
            async with asyncio.timeout(self._timeout_s):
                partitions: dict[str, list[int]] = {}
                for i, (topic, key, _value) in enumerate(records):
                    known = partitions.get(topic)
                    if known is None:
                        known = partitions[topic] = sorted(await producer.partitions_for(topic))
                    groups.setdefault((topic, self._partitioner(key, known, known)), []).append(i)
                for (topic, partition), members in groups.items():
                    batch = producer.create_batch()
                    carried: list[int] = []
                    for i in members:
                        _topic, key, value = records[i]
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            # full: send it and start another (an empty batch takes any record)
                            future = await producer.send_batch(batch, topic, partition=partition)
                            sent.append((future, carried))
                            batch, carried = producer.create_batch(), []
                            batch.append(key=key, value=value, timestamp=None)
                        carried.append(i)
                    future = await producer.send_batch(batch, topic, partition=partition)
                    sent.append((future, carried))
        except (KafkaError, OSError, TimeoutError) as exc:
            return sent, map_kafka_error(exc, "produce")
        return sent, None

    async def flush(self, timeout_s: float) -> None:
        """Wait until every record handed over so far is delivered or failed.

        Raises:
            BrokerUnavailable: not done within ``timeout_s``.
        """
        with kafka_errors("flush"):
            async with asyncio.timeout(timeout_s):
                await self._producer.flush()

    async def stop(self, timeout_s: float) -> None:
        """Flush what is pending (bounded by ``timeout_s``) and close the connections."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._producer.stop()
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("kafka producer did not stop cleanly", error=repr(exc))
