"""The detection service: readings topic -> detection engine -> detections table, topic, derived.

Its own consumer group on the readings topic (``detection.group_id``), the same loop shape as
every ghgwatch consumer. Per batch, in this order (the commit contract, STYLE.md 2.9):

1. poll a batch and decode it (undecodable records are skipped here; the storing consumer
   dead-letters them);
2. run the engine (pure numpy) over it;
3. write detections (upsert on ``detection_id``) and derived series (insert, duplicates
   ignored) in one database transaction;
4. produce the detection records to ``kafka.detections_topic`` (key ``device_id``) and wait
   for every acknowledgement;
5. advance the checkpoint and commit offsets when due.

A failure in 3 or 4 pauses the partitions and retries the same outputs (the engine state has
already moved on, so rewinding would lose them); a crash re-reads from the last commit.

Window state after a restart or rebalance is rebuilt by re-reading Kafka: on assignment each
partition is sought back ``detection.warmup_records`` records before its committed offset;
those records feed the engine's windows but their detections are dropped, because they were
made durable before the commit. Detections whose onset lies in that window keep their
``detection_id`` (it depends on event time only), so a CLEARED record after a restart still
matches its OPEN row. On revoke the partition's streams are forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters import (
    ensure_topics,
    kafka_errors,
    make_consumer,
    make_producer,
    pg_errors,
    started_client,
)
from adapters.checkpoint import Checkpoint, CommitOnRevoke
from core.errors import FatalError, TransientError
from core.settings import Settings
from processors.detection import (
    DerivedTable,
    DetectionEngine,
    EngineOutput,
    parse_kind,
    to_records,
)
from processors.detector_metrics import DetectorMetrics
from wire import ReadingBatch, ReadingFrame
from wire.events import DetectionRecord

__all__ = ["DetectionService", "DetectionStats"]

log = structlog.get_logger(__name__)

GETMANY_SLACK_S = 10.0
CONSUMER_START_TIMEOUT_S = 60.0
CONSUMER_STOP_TIMEOUT_S = 30.0
PRODUCER_TIMEOUT_S = 30.0
DB_CONNECT_TIMEOUT_S = 10.0
COMMITTED_QUERY_TIMEOUT_S = 10.0
LAG_QUERY_TIMEOUT_S = 1.0  # position() is local unless the offset must be reset
# Output retries back off up to this; well under max_poll_interval_ms.
RETRY_MAX_PAUSE_S = 20.0
MAX_OUTPUT_FAILURES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

_UPSERT_DETECTION = """
INSERT INTO detections (detection_id, state, device_id, kind, network, site, metric, detector,
                        severity, location, started_at, ended_at, score, value, threshold,
                        evidence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16::jsonb)
ON CONFLICT (detection_id) DO UPDATE
SET state = EXCLUDED.state, ended_at = EXCLUDED.ended_at
WHERE EXCLUDED.state = 'cleared'
"""
_INSERT_DERIVED = """
INSERT INTO derived (ts, device_id, series, value, valid)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::float8[], $5::bool[])
ON CONFLICT DO NOTHING
"""


@dataclass(slots=True)
class DetectionStats:
    """Counters of one run."""

    records: int = 0
    readings: int = 0
    warmup_records: int = 0
    late: int = 0
    detections: int = 0
    derived: int = 0
    undecodable: int = 0
    batches: int = 0
    output_retries: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.readings} readings ({self.late} late) in {self.records} records, "
            f"{self.detections} detection records, {self.derived} derived points, "
            f"{self.warmup_records} warm-up records, {self.elapsed_s:.1f} s"
        )


@dataclass(frozen=True, slots=True)
class _Decoded:
    stream: np.ndarray
    ts_ns: np.ndarray
    value: np.ndarray
    flags: np.ndarray
    readings: int


class DetectionService:
    """Consumes readings, runs the detection engine, stores and publishes detections.

    Args:
        settings: the frozen settings (``kafka``, ``db``, ``detection``, ``metrics``).

    Attributes:
        metrics: this service's Prometheus series (served while running when
            ``metrics.enabled``).
        metrics_port: the port that endpoint listens on while running, if enabled.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cfg = settings.detection
        self.metrics = DetectorMetrics()
        self.metrics_port: int | None = None
        self.engine = DetectionEngine(settings.detection)
        self._checkpoint = Checkpoint(self._cfg.commit_interval_s)
        self._stats = DetectionStats()
        self._warmup_until: dict[TopicPartition, int] = {}
        self._devices_of: dict[TopicPartition, set[str]] = {}
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def stats(self) -> DetectionStats:
        """The counters so far."""
        return self._stats

    # -- partitions ------------------------------------------------------------------------

    async def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None or self._cfg.warmup_records == 0:
            return
        for tp in partitions:
            try:
                with kafka_errors("fetch committed offset"):
                    async with asyncio.timeout(COMMITTED_QUERY_TIMEOUT_S):
                        committed = await consumer.committed(tp)
            except TransientError as exc:
                log.warning("no warm-up: committed offset unknown", partition=tp.partition,
                            error=str(exc))  # fmt: skip
                continue
            if not committed:
                continue
            start = max(0, committed - self._cfg.warmup_records)
            self._warmup_until[tp] = committed
            consumer.seek(tp, start)
            log.info("warming up windows", partition=tp.partition, start=start, until=committed)

    def _on_revoked(self, partitions: set[TopicPartition]) -> None:
        devices: set[str] = set()
        for tp in partitions:
            self._warmup_until.pop(tp, None)
            devices |= self._devices_of.pop(tp, set())
            self.metrics.forget_partition(tp.topic, tp.partition)
        if devices:
            self.engine.reset_streams(self.engine.streams.ids_for_devices(devices))

    @contextlib.asynccontextmanager
    async def _open_consumer(self) -> AsyncIterator[AIOKafkaConsumer]:
        s = self._settings
        consumer = make_consumer(
            s.kafka,
            s.kafka_bootstrap(),
            group_id=self._cfg.group_id,
            session_timeout_ms=s.processor.session_timeout_ms,
            max_poll_interval_ms=s.processor.max_poll_interval_ms,
        )
        listener = CommitOnRevoke(
            self._checkpoint, consumer, on_revoked=self._on_revoked, on_assigned=self._on_assigned
        )
        consumer.subscribe([s.kafka.readings_topic], listener=listener)
        self._consumer = consumer
        try:
            async with started_client(
                consumer,
                "consumer",
                start_timeout_s=CONSUMER_START_TIMEOUT_S,
                stop_timeout_s=CONSUMER_STOP_TIMEOUT_S,
            ):
                yield consumer
        finally:
            self._consumer = None

    @contextlib.asynccontextmanager
    async def _open_producer(self) -> AsyncIterator[AIOKafkaProducer]:
        s = self._settings
        producer = make_producer(s.kafka, s.kafka_bootstrap())
        async with started_client(
            producer,
            "producer",
            start_timeout_s=PRODUCER_TIMEOUT_S,
            stop_timeout_s=PRODUCER_TIMEOUT_S,
        ):
            yield producer

    @contextlib.asynccontextmanager
    async def _open_pool(self) -> AsyncIterator[asyncpg.Pool]:
        s = self._settings
        with pg_errors("connect"):
            pool = await asyncpg.create_pool(
                s.db_url(),
                min_size=1,
                max_size=2,
                command_timeout=s.db.command_timeout_s,
                timeout=DB_CONNECT_TIMEOUT_S,
            )
        try:
            yield pool
        finally:
            with pg_errors("close"):
                async with asyncio.timeout(DB_CONNECT_TIMEOUT_S):
                    await pool.close()

    # -- the loop --------------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        max_readings: int | None = None,
        timeout_s: float | None = None,
    ) -> DetectionStats:
        """Consume, detect, store and publish until ``stop``, ``max_readings`` or ``timeout_s``.

        Args:
            stop: set it to stop after the batch in flight.
            max_readings: stop once this many live readings were processed.
            timeout_s: stop after this many seconds.

        Returns:
            The run's counters.

        Raises:
            BrokerUnavailable: Kafka could not be reached.
            StorageBackpressure: the database stayed unavailable for every retry.
            FatalError: refused credentials or a missing schema (run ``ghgwatch db migrate``).
        """
        stop = stop if stop is not None else asyncio.Event()
        started = time.monotonic()
        deadline = started + timeout_s if timeout_s is not None else None
        s = self._settings
        await ensure_topics(
            s.kafka, s.kafka_bootstrap(), [s.kafka.readings_topic, s.kafka.detections_topic]
        )
        try:
            async with AsyncExitStack() as stack:
                if s.metrics.enabled:
                    server = self.metrics.serve(s.metrics)
                    stack.callback(server.close)
                    self.metrics_port = server.port
                pool = await stack.enter_async_context(self._open_pool())
                producer = await stack.enter_async_context(self._open_producer())
                consumer = await stack.enter_async_context(self._open_consumer())
                log.info("detector started", group=self._cfg.group_id)
                try:
                    while not stop.is_set():
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                        if max_readings is not None and self._stats.readings >= max_readings:
                            break
                        await self._step(consumer, producer, pool, stop)
                finally:
                    with contextlib.suppress(TransientError, FatalError):
                        await self._checkpoint.commit_if_due(consumer, force=True)
        finally:
            self._stats.elapsed_s = time.monotonic() - started
        log.info("detector stopped", summary=self._stats.summary())
        return self._stats

    async def _step(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        stop: asyncio.Event,
    ) -> None:
        """One iteration: poll, detect, write, produce, advance, commit when due."""
        timeout = self._cfg.poll_timeout_ms / 1000 + GETMANY_SLACK_S
        with kafka_errors("poll"):
            async with asyncio.timeout(timeout):
                batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                    timeout_ms=self._cfg.poll_timeout_ms, max_records=self._cfg.batch_max
                )
        if not batch:
            await self._checkpoint.commit_if_due(consumer)
            return
        t0 = time.perf_counter()
        # the lock spans detect + write + advance: a revoke waits for this batch, commits it,
        # and only then drops the partition's windows
        async with self._checkpoint.lock:
            assigned = consumer.assignment()
            batch = {tp: recs for tp, recs in batch.items() if tp in assigned}
            warm: list[Any] = []
            live: list[Any] = []
            for tp, recs in batch.items():
                until = self._warmup_until.get(tp)
                for rec in recs:
                    (warm if until is not None and rec.offset < until else live).append(rec)
                if until is not None and recs and recs[-1].offset + 1 >= until:
                    self._warmup_until.pop(tp, None)
            if warm:
                # windows only: these records' detections were made durable before the commit
                self._process(warm)
                self._stats.warmup_records += len(warm)
            output = self._process(live)
            records = to_records(output.events, self.engine.streams)
            await self._write_outputs(consumer, producer, pool, records, output.derived, stop)
            self._checkpoint.advance(batch, assigned=assigned)
        await self._checkpoint.commit_if_due(consumer)
        st = self._stats
        st.batches += 1
        st.records += len(live)
        st.readings += output.readings
        st.late += output.late
        st.detections += len(records)
        st.derived += len(output.derived)
        self.metrics.count_batch(
            readings=output.readings,
            late=output.late,
            records=records,
            derived=len(output.derived),
            seconds=time.perf_counter() - t0,
        )
        await self._update_lag(consumer)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Set the lag gauge of each assigned partition whose high watermark is known."""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                with kafka_errors("lag query"):
                    async with asyncio.timeout(LAG_QUERY_TIMEOUT_S):
                        position = await consumer.position(tp)
            except (TimeoutError, TransientError, FatalError) as exc:
                # a lag gauge must never stop detection; the next batch tries again
                log.debug("lag query failed", partition=tp.partition, error=str(exc))
                continue
            self.metrics.set_lag(tp.topic, tp.partition, max(0, highwater - position))

    def _process(self, recs: Sequence[Any]) -> EngineOutput:
        decoded = self._decode(recs)
        usable = self.engine.usable(decoded.flags, decoded.value)
        return self.engine.process(decoded.stream, decoded.ts_ns, decoded.value, usable)

    def _decode(self, recs: Sequence[Any]) -> _Decoded:
        batches: list[ReadingBatch] = []
        for rec in recs:
            try:
                batch = ReadingBatch.decode(rec.value or b"")
            except ValueError as exc:
                self._stats.undecodable += 1
                log.warning("undecodable reading record skipped", partition=rec.partition,
                            offset=rec.offset, error=str(exc)[:200])  # fmt: skip
                continue
            tp = TopicPartition(rec.topic, rec.partition)
            self._devices_of.setdefault(tp, set()).add(batch.device_id)
            batches.append(batch)
        frame = ReadingFrame.of(batches)
        return _Decoded(
            frame.ids(self._stream_of),
            frame.ts_us * 1000,
            frame.value,
            frame.flag,
            len(frame),
        )

    def _stream_of(self, batch: ReadingBatch, metric: str) -> int:
        """The engine's stream of (device, metric), registered on first sight."""
        h = batch.header
        sid = self.engine.streams.get(h.device_id, metric)
        if sid is None:
            loc = h.location.value if h.location is not None else None
            sid = self.engine.register(h.device_id, metric, parse_kind(h.kind.value), loc)
        return sid

    async def _write_outputs(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        records: list[DetectionRecord],
        derived: DerivedTable,
        stop: asyncio.Event,
    ) -> None:
        """Database, then Kafka; on a transient failure pause input and retry the same."""
        if not records and not len(derived):
            return
        failures = 0
        while True:
            try:
                await self._write_db(pool, records, derived)
                await self._produce(producer, records)
            except TransientError as exc:
                failures += 1
                self._stats.output_retries += 1
                if failures >= MAX_OUTPUT_FAILURES or stop.is_set():
                    raise
                wait_s = min(RETRY_MAX_PAUSE_S, exc.retry_after * 2 ** (failures - 1))
                log.warning("detection output failed: pausing input", error=str(exc),
                            wait_s=wait_s, failures=failures)  # fmt: skip
                consumer.pause(*consumer.assignment())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await stop.wait()
                continue
            finally:
                if failures:
                    consumer.resume(*consumer.assignment())
            return

    async def _write_db(
        self, pool: asyncpg.Pool, records: list[DetectionRecord], derived: DerivedTable
    ) -> None:
        rows = [
            (
                r.detection_id, r.state.value, r.device_id, r.kind, r.network, r.site,
                r.metric, r.detector, r.severity.value, r.location, r.started_at, r.ended_at,
                r.score, r.value, r.threshold, json.dumps(r.evidence),
            )
            for r in records
        ]  # fmt: skip
        with pg_errors("write detections"):
            async with asyncio.timeout(self._settings.db.command_timeout_s):
                async with pool.acquire() as conn, conn.transaction():
                    if rows:
                        await conn.executemany(_UPSERT_DETECTION, rows)
                    if len(derived):
                        ts = [
                            _EPOCH + timedelta(microseconds=t // 1000)
                            for t in derived.ts_ns.tolist()
                        ]
                        value = [None if not np.isfinite(v) else v for v in derived.value.tolist()]
                        await conn.execute(
                            _INSERT_DERIVED, ts, derived.device_id, derived.series, value,
                            derived.valid.tolist(),
                        )  # fmt: skip

    async def _produce(self, producer: AIOKafkaProducer, records: list[DetectionRecord]) -> None:
        if not records:
            return
        topic = self._settings.kafka.detections_topic
        with kafka_errors("produce detections"):
            async with asyncio.timeout(PRODUCER_TIMEOUT_S):
                futures = [
                    await producer.send(
                        topic, value=r.model_dump_json().encode(), key=r.device_id.encode()
                    )
                    for r in records
                ]
                await asyncio.gather(*futures)
