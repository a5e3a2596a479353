"""The one Kafka consumer loop every ghgwatch service runs; services supply the batch handler.

What :meth:`ConsumerLoop.run` does, in order (STYLE.md 2.8 and 2.9, quix-streams
``Application.run``):

1. Create the topics if missing, serve the service's metrics, join the consumer group with
   :class:`~adapters.checkpoint.CommitOnRevoke` as rebalance listener.
2. Until ``stop`` is set, ``timeout_s`` passed or ``max_items`` were handled: poll one batch
   (bounded: ``poll_timeout_ms`` plus ``GETMANY_SLACK_S``); under
   :attr:`Checkpoint.lock <adapters.checkpoint.Checkpoint.lock>`, hand the records of the
   partitions still assigned to the service's handler, which makes them durable; then advance
   the checkpoint (next offset = last + 1).
3. When ``commit_interval_s`` has passed (idle polls included): commit the durable offsets
   and report each partition's lag.
4. After the loop, whatever ended it: one forced commit of what is durable.

Failures, and what the loop does about them:

- The handler raises :class:`~core.errors.StorageBackpressure`: nothing is advanced; the
  assigned partitions are paused, rewound to the first offset not durable and resumed after
  ``retry_after`` (doubling while it keeps failing, capped at ``BACKPRESSURE_MAX_PAUSE_S``,
  cut short by stop).
- A commit raises :class:`~core.errors.BrokerUnavailable` (a broker restart, a commit slower
  than ``COMMIT_TIMEOUT_S``): logged and counted; the offsets stay pending and go with the
  next due commit. The loop never exits for it: a crash meanwhile only means redelivery,
  which every ghgwatch handler absorbs.
- A poll raises :class:`~core.errors.BrokerUnavailable`: logged, counted, retried after
  ``retry_after``; after ``MAX_POLL_FAILURES`` in a row the client is taken for stuck and
  the error is raised, so that the service's supervisor restarts it.
- The final commit fails: logged; the records are delivered again and skipped as repeats.
- Anything else the handler or a partition hook raises ends the run (after the final commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.checkpoint import Checkpoint, CommitOnRevoke, PartitionHook
from adapters.kafka import ensure_topics, kafka_errors, make_consumer, started_client
from adapters.metrics import LagGauge, MetricsServer
from core.errors import BrokerUnavailable, GhgwatchError, StorageBackpressure
from core.settings import ConsumerSettings, MetricsSettings, Settings

__all__ = [
    "BACKPRESSURE_MAX_PAUSE_S",
    "CONSUMER_START_TIMEOUT_S",
    "CONSUMER_STOP_TIMEOUT_S",
    "GETMANY_SLACK_S",
    "LAG_QUERY_TIMEOUT_S",
    "MAX_POLL_FAILURES",
    "Batch",
    "BatchHandler",
    "ConsumedRecord",
    "ConsumerLoop",
    "ConsumerService",
    "LoopMetrics",
    "LoopStats",
]

log = structlog.get_logger(__name__)

# Doubling pauses while the store keeps pushing back stop growing here; far below
# max_poll_interval_ms, so a paused member stays in its group.
BACKPRESSURE_MAX_PAUSE_S = 30.0
# getmany returns after poll_timeout_ms; this much more means the client is stuck.
GETMANY_SLACK_S = 10.0
# position() is local unless the offset must be reset; a lag gauge must never hold a batch up.
LAG_QUERY_TIMEOUT_S = 1.0
CONSUMER_START_TIMEOUT_S = 60.0
CONSUMER_STOP_TIMEOUT_S = 30.0
# Polls failing this many times in a row (about a minute) mean a stuck client: exit, restart.
MAX_POLL_FAILURES = 5


class ConsumedRecord(Protocol):
    """What a handler reads of one Kafka record (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


Batch = dict[TopicPartition, list[Any]]
"""One poll's records by partition (``getmany``'s result), records in offset order."""

BatchHandler = Callable[[Batch], Awaitable[int]]
"""Makes a batch durable and returns how many items (readings, detections) it handled.

It runs under the checkpoint lock, so a revoke waits for it. Raise
:class:`~core.errors.StorageBackpressure` to have the batch rewound and delivered again.
"""


class LoopMetrics(Protocol):
    """The part of a service's :class:`~adapters.metrics.ServiceMetrics` the loop uses."""

    @property
    def consumer_lag(self) -> LagGauge | None: ...

    def serve(self, cfg: MetricsSettings) -> MetricsServer | None: ...


@dataclass(slots=True)
class LoopStats:
    """Counters of one :meth:`ConsumerLoop.run`.

    Attributes:
        records: records handed to the handler and made durable.
        items: what the handler reported handling (readings, detections).
        batches: batches made durable.
        backpressure: times the handler pushed back (pause and rewind).
        commits: offset commits that committed something.
        commit_failures: commits Kafka did not take in time (retried at the next).
        poll_failures: polls that failed (retried).
        elapsed_s: wall time of the run.
    """

    records: int = 0
    items: int = 0
    batches: int = 0
    backpressure: int = 0
    commits: int = 0
    commit_failures: int = 0
    poll_failures: int = 0
    elapsed_s: float = 0.0


class ConsumerLoop:
    """One consumer-group member: poll, hand over, checkpoint, commit (see module docstring).

    Args:
        settings: the frozen settings (``kafka`` connection, ``metrics``).
        cfg: the service's consumer section (``processor``, ``detection``, ``alerts``).
        name: the service, for logs (``"processor"``).
        topics: the topics to consume.
        handle: makes one batch durable (see :data:`BatchHandler`).
        metrics: the service's metrics: served while running, lag reported per partition.
        on_assigned: called with newly assigned partitions (e.g. to seek for a warm-up).
        on_revoked: called with revoked partitions after their offsets were committed (e.g.
            to drop their windows).
        max_records: records to take in the next poll (default ``cfg.batch_max``).
        health: called before every poll; raise from it to stop the run (helper tasks).
        tick: awaited after every poll, with records or idle (at most ``poll_timeout_ms``
            apart), for wall-clock work such as a liveness check; it runs outside the
            checkpoint lock, and what it raises ends the run like the handler's errors.
        extra_topics: further topics to create at start (ones the service produces to).
        rewind_on_backpressure: False for a handler that retries its outputs itself because
            its state already moved on; its ``StorageBackpressure`` then ends the run.
        max_partition_fetch_bytes: per-partition fetch limit; None keeps aiokafka's default.
    """

    def __init__(
        self,
        settings: Settings,
        cfg: ConsumerSettings,
        *,
        name: str,
        topics: Sequence[str],
        handle: BatchHandler,
        metrics: LoopMetrics | None = None,
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        max_records: Callable[[], int] | None = None,
        health: Callable[[], None] | None = None,
        tick: Callable[[], Awaitable[None]] | None = None,
        extra_topics: Sequence[str] = (),
        rewind_on_backpressure: bool = True,
        max_partition_fetch_bytes: int | None = None,
    ) -> None:
        self._settings = settings
        self._cfg = cfg
        self._name = name
        self._topics = list(topics)
        self._extra_topics = list(extra_topics)
        self._handle = handle
        self._metrics = metrics
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._max_records = max_records
        self._health = health
        self._tick = tick
        self._rewind_on_backpressure = rewind_on_backpressure
        self._max_partition_fetch_bytes = max_partition_fetch_bytes
        self.checkpoint = Checkpoint(cfg.commit_interval_s)
        self.stats = LoopStats()
        self.metrics_port: int | None = None
        """The port the metrics endpoint listens on while running, if enabled."""
        self._consumer: AIOKafkaConsumer | None = None
        self._stop = asyncio.Event()
        self._backpressure_run = 0
        self._poll_failure_run = 0
        self._used = False

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The group member while running (partition hooks seek with it), else None."""
        return self._consumer

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        """(topic, partition) pairs consumed right now (empty when stopped)."""
        consumer = self._consumer
        if consumer is None:
            return frozenset()
        return frozenset((tp.topic, tp.partition) for tp in consumer.assignment())

    @property
    def stopping(self) -> bool:
        """True once the run was asked to stop (handlers retrying outputs give up then)."""
        return self._stop.is_set()

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        max_items: int | None = None,
        timeout_s: float | None = None,
    ) -> LoopStats:
        """Consume until ``stop`` is set, ``max_items`` were handled or ``timeout_s`` passed.

        Args:
            stop: set it to stop after the batch in flight (signal handlers do only that).
            max_items: stop once the handler reported this many items.
            timeout_s: stop after this many seconds.

        Returns:
            The run's counters.

        Raises:
            BrokerUnavailable: Kafka could not be reached at start, or polls kept failing.
            FatalError: refused credentials or commits.
            RuntimeError: this loop already ran.
        """
        if self._used:
            raise RuntimeError(f"a {self._name} consumer loop runs once; build a new one")
        self._used = True
        self._stop = stop if stop is not None else asyncio.Event()
        started = time.monotonic()
        deadline = started + timeout_s if timeout_s is not None else None
        try:
            s = self._settings
            await ensure_topics(s.kafka, s.kafka_bootstrap(), self._topics + self._extra_topics)
            async with AsyncExitStack() as stack:
                server = self._metrics.serve(s.metrics) if self._metrics is not None else None
                if server is not None:
                    stack.callback(server.close)
                    self.metrics_port = server.port
                consumer = await stack.enter_async_context(self._open_consumer())
                log.info(f"{self._name} started", group=self._cfg.group_id, topics=self._topics)
                try:
                    while not self._stop.is_set():
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                        if max_items is not None and self.stats.items >= max_items:
                            break
                        if self._health is not None:
                            self._health()
                        await self._step(consumer)
                finally:
                    await self._final_commit(consumer)
        finally:
            self.stats.elapsed_s = time.monotonic() - started
        return self.stats

    async def pause(self, wait_s: float, *, rewind: bool = False) -> None:
        """Pause every assigned partition for ``wait_s`` (cut short by stop), then resume.

        Args:
            wait_s: how long to hold input back.
            rewind: also seek each partition back to its first offset not durable yet.

        Raises:
            BrokerUnavailable: a rewind could not ask Kafka for the committed offset.
        """
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("pause() outside run()")
        partitions = set(consumer.assignment())
        consumer.pause(*partitions)
        try:
            if rewind:
                await self.checkpoint.rewind(consumer, partitions)
            await self._wait(wait_s)
        finally:
            consumer.resume(*[tp for tp in partitions if tp in consumer.assignment()])

    # -- one iteration ----------------------------------------------------------------------

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        """Poll, hand over under the lock, advance; commit and report lag when due."""
        try:
            batch = await self._poll(consumer)
        except BrokerUnavailable as exc:
            self.stats.poll_failures += 1
            self._poll_failure_run += 1
            if self._poll_failure_run >= MAX_POLL_FAILURES:
                raise
            log.warning(f"{self._name} poll failed; retrying", error=str(exc),
                        failures=self._poll_failure_run)  # fmt: skip
            await self._wait(exc.retry_after)
            return
        self._poll_failure_run = 0
        if batch:
            backpressure: StorageBackpressure | None = None
            async with self.checkpoint.lock:
                # a revoke may have come between the poll and the lock: those records belong
                # to the new owner now, which reads them from the last commit
                assigned = consumer.assignment()
                batch = {tp: recs for tp, recs in batch.items() if recs and tp in assigned}
                try:
                    items = await self._handle(batch) if batch else 0
                except StorageBackpressure as exc:
                    if not self._rewind_on_backpressure:
                        raise
                    backpressure = exc
                else:
                    self.checkpoint.advance(batch, assigned=assigned)
            if backpressure is not None:
                await self._pause_and_rewind(batch, backpressure)
                return
            self._backpressure_run = 0
            self.stats.batches += 1
            self.stats.records += sum(len(recs) for recs in batch.values())
            self.stats.items += items
        if self._tick is not None:
            await self._tick()
        await self._commit_if_due(consumer)

    async def _poll(self, consumer: AIOKafkaConsumer) -> Batch:
        limit = self._max_records() if self._max_records is not None else self._cfg.batch_max
        with kafka_errors("poll"):
            async with asyncio.timeout(self._cfg.poll_timeout_ms / 1000 + GETMANY_SLACK_S):
                batch: Batch = await consumer.getmany(
                    timeout_ms=self._cfg.poll_timeout_ms, max_records=limit
                )
        return batch

    async def _pause_and_rewind(self, batch: Batch, exc: StorageBackpressure) -> None:
        """Pause input, seek back to the first non-durable offset, wait, resume."""
        self._backpressure_run += 1
        self.stats.backpressure += 1
        wait_s = min(BACKPRESSURE_MAX_PAUSE_S, exc.retry_after * 2 ** (self._backpressure_run - 1))
        log.warning(
            f"{self._name} store pushed back: pausing and rewinding",
            error=str(exc),
            wait_s=round(wait_s, 2),
            failures=self._backpressure_run,
            first_offsets={_tp_name(tp): recs[0].offset for tp, recs in batch.items() if recs},
        )
        await self.pause(wait_s, rewind=True)

    async def _wait(self, wait_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._stop.wait()

    # -- commits and lag --------------------------------------------------------------------

    async def _commit_if_due(self, consumer: AIOKafkaConsumer) -> None:
        if not self.checkpoint.due():
            return
        try:
            if await self.checkpoint.commit_if_due(consumer):
                self.stats.commits += 1
        except BrokerUnavailable as exc:
            # The offsets stay pending and go with the next commit; a crash meanwhile only
            # means redelivery, which every handler absorbs.
            self.stats.commit_failures += 1
            log.warning(f"{self._name} offset commit failed; retrying at the next interval",
                        error=str(exc), failures=self.stats.commit_failures)  # fmt: skip
        await self._report_lag(consumer)

    async def _final_commit(self, consumer: AIOKafkaConsumer) -> None:
        try:
            if await self.checkpoint.commit_if_due(consumer, force=True):
                self.stats.commits += 1
        except GhgwatchError as exc:
            # Durable work whose offsets are not committed is delivered again and skipped.
            log.warning(f"{self._name} final offset commit failed", error=str(exc))

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Set the lag of each assigned partition whose high watermark is known."""
        gauge = self._metrics.consumer_lag if self._metrics is not None else None
        if gauge is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                with kafka_errors("lag query"):
                    async with asyncio.timeout(LAG_QUERY_TIMEOUT_S):
                        position = await consumer.position(tp)
            except (GhgwatchError, LookupError, RuntimeError) as exc:
                # a lag gauge must never stop the service; the next due commit tries again
                log.debug("lag query failed", partition=_tp_name(tp), error=str(exc))
                continue
            gauge.set(tp.topic, tp.partition, max(0, highwater - position))

    # -- the group member -------------------------------------------------------------------

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        gauge = self._metrics.consumer_lag if self._metrics is not None else None
        for tp in partitions:
            if gauge is not None:
                gauge.forget(tp.topic, tp.partition)
        if self._on_revoked is not None:
            res = self._on_revoked(partitions)
            if res is not None:
                await res

    @contextlib.asynccontextmanager
    async def _open_consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        s, cfg = self._settings, self._cfg
        consumer = make_consumer(
            s.kafka,
            s.kafka_bootstrap(),
            group_id=cfg.group_id,
            session_timeout_ms=cfg.session_timeout_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            max_partition_fetch_bytes=self._max_partition_fetch_bytes,
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        )
        listener = CommitOnRevoke(
            self.checkpoint, consumer, on_revoked=self._revoked, on_assigned=self._on_assigned
        )
        consumer.subscribe(self._topics, listener=listener)
        # set before start: partition hooks may run as soon as the member joins
        self._consumer = consumer
        try:
            async with started_client(
                consumer,
                f"{self._name} consumer",
                start_timeout_s=CONSUMER_START_TIMEOUT_S,
                stop_timeout_s=CONSUMER_STOP_TIMEOUT_S,
            ):
                yield consumer
        finally:
            self._consumer = None


class ConsumerService:
    """Base of a service that runs a :class:`ConsumerLoop`: the loop's state, read live.

    Subclasses build their loop in ``__init__`` as ``self._loop``.
    """

    _loop: ConsumerLoop

    @property
    def loop_stats(self) -> LoopStats:
        """The consumer loop's counters: commits, failed commits and polls, pauses."""
        return self._loop.stats

    @property
    def metrics_port(self) -> int | None:
        """The port the metrics endpoint listens on while running, if enabled."""
        return self._loop.metrics_port

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        """(topic, partition) pairs this service consumes right now (empty when stopped)."""
        return self._loop.assigned


def _tp_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"
