"""The storing processor: consume readings and dead letters from Kafka, store them once.

What a run guarantees, in order, for every polled batch:

1. Poll at most ``processor.batch_max`` records, fewer when the last batch's records carried
   many readings, so a write holds about ``processor.batch_max_readings`` readings. Decode
   (pure): a record that does not decode becomes a dead letter with reason
   ``undecodable_record``; nothing in the input can stop the loop.
2. Write readings, device registry and dead letters in one database transaction
   (:class:`~processors.storage.ReadingStore`).
3. Only after that transaction committed: advance the checkpoint (next offset = last + 1).
4. Commit offsets to Kafka when ``processor.commit_interval_s`` has passed, on revoke (for
   the partitions that move) and once more, forced, on stop.

If the database pushes back (:class:`~core.errors.StorageBackpressure`), the batch is not
advanced: the assigned partitions are paused, rewound to the first offset that is not
durable, and resumed after ``retry_after`` (doubling while it keeps failing, capped at
``BACKPRESSURE_MAX_PAUSE_S``, interrupted by stop). A crash anywhere means Kafka delivers
the uncommitted records again; the writer stores each reading exactly once regardless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters import ensure_topics, kafka_errors, make_consumer, started_client
from adapters.checkpoint import Checkpoint, CommitOnRevoke
from core.errors import BrokerUnavailable, GhgwatchError, StorageBackpressure
from core.settings import Settings
from processors import metrics
from processors.storage import ReadingStore, WriteResult, decode_values

__all__ = [
    "BACKPRESSURE_MAX_PAUSE_S",
    "GC_GEN0_THRESHOLD",
    "GETMANY_SLACK_S",
    "MAX_PARTITION_FETCH_BYTES",
    "Processor",
    "ProcessorStats",
]

log = structlog.get_logger(__name__)

# Doubling pauses while the database keeps failing stop growing here.
BACKPRESSURE_MAX_PAUSE_S = 30.0
# getmany returns after poll_timeout_ms; this much more means the client is stuck.
GETMANY_SLACK_S = 10.0
# Records are ~1 KB (a gateway's batch); a bigger fetch keeps large polls possible.
MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
LAG_QUERY_TIMEOUT_S = 2.0
# A batch allocates ~10 objects per reading and keeps them alive until written; with
# CPython's default gen-0 threshold (700) that triggers hundreds of collections per batch,
# each promoting live batch objects towards costly full collections. Measured on the
# writer benchmark: decode 145k -> 390k readings/s. Applied while run() runs, then restored.
GC_GEN0_THRESHOLD = 50_000
CONSUMER_START_TIMEOUT_S = 60.0
CONSUMER_STOP_TIMEOUT_S = 30.0
_PAYLOAD_LOG_BYTES = 120


@contextlib.contextmanager
def _batch_friendly_gc() -> Iterator[None]:
    """Raise the gen-0 GC threshold to ``GC_GEN0_THRESHOLD`` for the block (never lower it)."""
    before = gc.get_threshold()
    if before[0] >= GC_GEN0_THRESHOLD:
        yield
        return
    gc.set_threshold(GC_GEN0_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


@dataclass(slots=True)
class ProcessorStats:
    """Counters of one :meth:`Processor.run`.

    Attributes:
        records: Kafka records consumed and made durable.
        inserted: readings newly stored.
        duplicates: readings skipped as already stored (redelivery).
        dead_letters: dead-letter deliveries stored (including undecodable records).
        undecodable: Kafka records that did not decode.
        batches: polled batches stored.
        backpressure: times the database pushed back.
        commits: offset commits made.
        elapsed_s: wall time of the run.
    """

    records: int = 0
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    undecodable: int = 0
    batches: int = 0
    backpressure: int = 0
    commits: int = 0
    elapsed_s: float = 0.0

    @property
    def readings(self) -> int:
        """Readings handled: newly stored plus already stored."""
        return self.inserted + self.duplicates

    def summary(self) -> str:
        """One line for the CLI."""
        rate = self.inserted / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"{self.inserted} readings stored ({rate:,.0f}/s), {self.duplicates} duplicates "
            f"skipped, {self.dead_letters} dead letters ({self.undecodable} undecodable), "
            f"{self.records} records in {self.batches} batches, "
            f"{self.backpressure} backpressure pauses, {self.elapsed_s:.1f} s"
        )


class Processor:
    """Consumes the readings and dead-letter topics and stores them (see module docstring).

    Args:
        settings: the frozen settings (``kafka``, ``db``, ``processor``, ``metrics``).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cfg = settings.processor
        self._checkpoint = Checkpoint(self._cfg.commit_interval_s)
        self._stats = ProcessorStats()
        self._failures = 0
        # Readings per record in the last batch: sizes the next poll (processor.batch_max_readings).
        self._per_record = 1.0
        self._consumer: AIOKafkaConsumer | None = None
        self._used = False

    @property
    def stats(self) -> ProcessorStats:
        """The counters so far (live during :meth:`run`)."""
        return self._stats

    @property
    def assigned(self) -> frozenset[tuple[str, int]]:
        """(topic, partition) pairs this processor consumes right now (empty when stopped)."""
        consumer = self._consumer
        if consumer is None:
            return frozenset()
        return frozenset((tp.topic, tp.partition) for tp in consumer.assignment())

    @contextlib.asynccontextmanager
    async def _open_consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        s = self._settings
        consumer = make_consumer(
            s.kafka,
            s.kafka_bootstrap(),
            group_id=self._cfg.group_id,
            session_timeout_ms=self._cfg.session_timeout_ms,
            max_poll_interval_ms=self._cfg.max_poll_interval_ms,
            max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        )
        listener = CommitOnRevoke(self._checkpoint, consumer, on_revoked=self._clear_lag)
        consumer.subscribe([s.kafka.readings_topic, s.kafka.deadletter_topic], listener=listener)
        async with started_client(
            consumer,
            "consumer",
            start_timeout_s=CONSUMER_START_TIMEOUT_S,
            stop_timeout_s=CONSUMER_STOP_TIMEOUT_S,
        ):
            self._consumer = consumer
            try:
                yield consumer
            finally:
                self._consumer = None

    def _clear_lag(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        max_readings: int | None = None,
        timeout_s: float | None = None,
    ) -> ProcessorStats:
        """Consume and store until ``stop`` is set, ``max_readings`` or ``timeout_s``.

        Args:
            stop: set it to stop after the batch in flight (SIGINT/SIGTERM do, via the CLI).
            max_readings: stop once this many readings were handled (stored or found
                already stored).
            timeout_s: stop after this many seconds.

        Returns:
            The run's counters.

        Raises:
            SchemaMissing: the database has no schema (run ``ghgwatch db migrate``).
            BrokerUnavailable: Kafka could not be reached.
            FatalError: refused credentials or data the database refuses (a bug).
            RuntimeError: this processor already ran.
        """
        if self._used:
            raise RuntimeError("a Processor runs once; build a new one to run again")
        self._used = True
        with _batch_friendly_gc():
            return await self._run(stop, max_readings, timeout_s)

    async def _run(
        self, stop: asyncio.Event | None, max_readings: int | None, timeout_s: float | None
    ) -> ProcessorStats:
        stop = stop if stop is not None else asyncio.Event()
        started = time.monotonic()
        deadline = started + timeout_s if timeout_s is not None else None
        s = self._settings
        await ensure_topics(
            s.kafka, s.kafka_bootstrap(), [s.kafka.readings_topic, s.kafka.deadletter_topic]
        )
        try:
            async with AsyncExitStack() as stack:
                store = await stack.enter_async_context(
                    ReadingStore(s.db_url(), s.db, retry_after_s=self._cfg.backpressure_pause_s)
                )
                stack.callback(metrics.start_metrics_server(s.metrics))
                consumer = await stack.enter_async_context(self._open_consumer())
                log.info(
                    "processor started",
                    group=self._cfg.group_id,
                    topics=[s.kafka.readings_topic, s.kafka.deadletter_topic],
                )
                try:
                    while not stop.is_set():
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                        if max_readings is not None and self._stats.readings >= max_readings:
                            break
                        await self._step(consumer, store, stop)
                finally:
                    await self._final_commit(consumer)
        finally:
            self._stats.elapsed_s = time.monotonic() - started
        log.info("processor stopped", summary=self._stats.summary())
        return self._stats

    async def _final_commit(self, consumer: AIOKafkaConsumer) -> None:
        try:
            if await self._checkpoint.commit_if_due(consumer, force=True):
                self._stats.commits += 1
        except GhgwatchError as exc:
            # Durable work whose offsets are not committed is delivered again and skipped.
            log.warning("final offset commit failed", error=str(exc))

    async def _step(
        self, consumer: AIOKafkaConsumer, store: ReadingStore, stop: asyncio.Event
    ) -> None:
        """One iteration: poll, decode, write, advance, commit when due."""
        with kafka_errors("poll"):
            async with asyncio.timeout(self._cfg.poll_timeout_ms / 1000 + GETMANY_SLACK_S):
                batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                    timeout_ms=self._cfg.poll_timeout_ms, max_records=self._poll_records()
                )
        if not batch:
            await self._commit_if_due(consumer)
            return
        t0 = time.perf_counter()
        decoded = decode_values(
            (rec for recs in batch.values() for rec in recs),
            readings_topic=self._settings.kafka.readings_topic,
            received_at=datetime.now(UTC),
        )
        if decoded.readings:
            self._per_record = sum(map(len, decoded.readings)) / len(decoded.readings)
        for item in decoded.undecodable:
            metrics.UNDECODABLE_RECORDS.labels(item.topic).inc()
            log.warning(
                "undecodable kafka record dead-lettered",
                topic=item.topic,
                partition=item.partition,
                offset=item.offset,
                payload=(item.value or b"")[:_PAYLOAD_LOG_BYTES].decode("utf-8", "replace"),
            )
        async with self._checkpoint.lock:
            try:
                result = await store.write(decoded.readings, decoded.dead)
            except StorageBackpressure as exc:
                backpressure: StorageBackpressure | None = exc
            else:
                backpressure = None
                self._checkpoint.advance(batch, assigned=consumer.assignment())
        if backpressure is not None:
            await self._pause_and_rewind(consumer, batch, backpressure, stop)
            return
        self._failures = 0
        await self._commit_if_due(consumer)
        self._account(batch, result, decoded.dead, len(decoded.undecodable))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)

    def _poll_records(self) -> int:
        """Records to take in one poll: ``batch_max``, fewer when records carry many readings."""
        by_readings = int(self._cfg.batch_max_readings / max(self._per_record, 1.0))
        return max(1, min(self._cfg.batch_max, by_readings))

    def _account(
        self,
        batch: Mapping[TopicPartition, Sequence[Any]],
        result: WriteResult,
        dead: Sequence[Any],
        undecodable: int,
    ) -> None:
        st = self._stats
        st.batches += 1
        st.records += sum(len(v) for v in batch.values())
        st.inserted += result.inserted
        st.duplicates += result.duplicates
        st.dead_letters += result.dead_letters
        st.undecodable += undecodable
        metrics.READINGS_STORED.inc(result.inserted)
        metrics.DUPLICATES_SKIPPED.inc(result.duplicates)
        for reason, n in collections.Counter(d.reason for d in dead).items():
            metrics.DEAD_LETTERS_STORED.labels(reason).inc(n)
        for latency in result.latencies_s:
            metrics.END_TO_END_SECONDS.observe(latency)

    async def _commit_if_due(self, consumer: AIOKafkaConsumer) -> None:
        if not self._checkpoint.due():
            return
        try:
            if await self._checkpoint.commit_if_due(consumer):
                self._stats.commits += 1
        except BrokerUnavailable as exc:
            # The offsets stay pending and go with the next commit; a crash meanwhile only
            # means redelivery, which the writer absorbs.
            log.warning("offset commit failed; retrying at the next interval", error=str(exc))
        await self._update_lag(consumer)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                async with asyncio.timeout(LAG_QUERY_TIMEOUT_S):
                    position = await consumer.position(tp)
            except (TimeoutError, LookupError, RuntimeError):
                continue
            except Exception as exc:  # a lag gauge must never stop storage
                log.debug("lag query failed", partition=tp.partition, error=str(exc))
                continue
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                max(0, highwater - position)
            )

    async def _pause_and_rewind(
        self,
        consumer: AIOKafkaConsumer,
        batch: Mapping[TopicPartition, Sequence[Any]],
        exc: StorageBackpressure,
        stop: asyncio.Event,
    ) -> None:
        """Pause input, seek back to the first non-durable offset, wait, resume."""
        self._failures += 1
        self._stats.backpressure += 1
        metrics.BACKPRESSURE_PAUSES.inc()
        wait_s = min(BACKPRESSURE_MAX_PAUSE_S, exc.retry_after * 2 ** (self._failures - 1))
        partitions = set(consumer.assignment())
        first = {
            f"{tp.topic}[{tp.partition}]": recs[0].offset for tp, recs in batch.items() if recs
        }
        log.warning(
            "database backpressure: pausing and rewinding",
            error=str(exc),
            wait_s=round(wait_s, 2),
            failures=self._failures,
            first_offsets=first,
        )
        consumer.pause(*partitions)
        try:
            await self._checkpoint.rewind(consumer, partitions)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await stop.wait()
        finally:
            consumer.resume(*[tp for tp in partitions if tp in consumer.assignment()])
