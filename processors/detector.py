"""The detector: readings topic -> detection engine -> detections table, topic, derived series.

Its own consumer group on the readings topic (``detection.group_id``), run by the one
consumer loop (:class:`adapters.ConsumerLoop`). Per batch, in this order (the commit
contract, STYLE.md 2.9):

1. poll a batch and decode it (undecodable records are skipped here; the storing processor
   dead-letters them);
2. run the engine (pure numpy) over it;
3. write detections (upsert on ``detection_id``) and derived series (insert, duplicates
   ignored) in one database transaction (:class:`~processors.storage.DetectionStore`);
4. produce the detection records to ``kafka.detections_topic`` (key ``device_id``) and wait
   for every acknowledgement;
5. the loop advances the checkpoint and commits offsets when due.

A failure in 3 or 4 pauses the partitions and retries the same outputs (the engine state has
already moved on, so rewinding would lose them); a crash re-reads from the last commit.

Window state after a restart or rebalance is rebuilt by re-reading Kafka: on assignment each
partition is sought back ``detection.warmup_records`` records before its committed offset;
those records feed the engine's windows but their detections are dropped, because they were
made durable before the commit. Detections whose onset lies in that window keep their
``detection_id`` (it depends on event time only), so a CLEARED record after a restart still
matches its OPEN row. On revoke the partition's streams are forgotten.

Open episodes survive restarts (issue 9, finding 5): the warm-up may start after an open
episode's onset, and the rebuilt state would then re-open it under a later onset, so its
clear would miss the stored row. Before a stream's first live reading after assignment, the
detections stored open for it are reconciled with the rebuilt state
(:meth:`~processors.detection.DetectionEngine.resume_episode`): an episode the engine has open
continues under the stored id and onset; one the rebuilt state has closed is cleared at the
stream's watermark with evidence ``restart_closed = 1``; a second stored open episode of the
same stream and detector (left by an older version) is cleared with ``restart_duplicate = 1``.
Detections of CEMS units and network neighbours keep no per-stream episode in the engine and
are left as stored.

Silent devices (issue 13, item 3): the consumer loop calls :meth:`DetectorService._tick`
after every poll, records or none, and every ``no_data_check_s`` it raises ``no_data`` for
each device silent (wall clock) longer than its learned sampling pattern allows
(:class:`~processors.detection.liveness.LivenessTracker`); the device's next reading clears
it. The device-events topic is read too: a device's MQTT last will, which the bridge
forwards there as a :class:`~wire.events.DeviceEventRecord` (docs/wire-contract.md), raises
``no_data`` at once (a will older than ``no_data_floor_s``, read
after an outage of the detector, only starts the device's clock). Devices known from the
warm-up are timed from the restart, so a backlog never pages every device at once; a
``no_data`` stored open before a restart is continued, and cleared by the device's next
reading.

Site data comes from the device registry (:class:`~registry.view.RegistryView`, refreshed
on change): a registered mine sensor's location class sets its methane levels (over the
class its messages name), and a registered CEMS unit's benchmark class and site pressure (or
altitude) are used for its intensity and for minutes without a barometric reading. Nothing
is guessed from device names. Streams keep the levels they were registered with until the
detector restarts; a CEMS unit's site data changes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import structlog
from aiokafka import AIOKafkaProducer, TopicPartition

from adapters import (
    Batch,
    ConsumerLoop,
    ConsumerService,
    kafka_errors,
    make_producer,
    start_wait_s,
    started_client,
    wait_for_database,
)
from core.errors import FatalError, TransientError
from core.settings import Settings
from processors.detection import (
    KIND_NAMES,
    NEVER_NS,
    DerivedTable,
    DetectionEngine,
    Detector,
    EngineOutput,
    ns_to_datetime,
    parse_kind,
    to_records,
)
from processors.detection.liveness import DEVICE_METRIC, LivenessTracker
from processors.detector_metrics import DetectorMetrics
from processors.storage import RESTART_CLOSED, RESTART_DUPLICATE, DetectionStore
from registry import RegistryView
from wire import ReadingBatch, ReadingFrame, SourceKind
from wire.events import DetectionRecord, DetectionState, DeviceEvent, DeviceEventRecord

__all__ = ["DetectorService", "DetectorStats"]

log = structlog.get_logger(__name__)

PRODUCER_TIMEOUT_S = 30.0
COMMITTED_QUERY_TIMEOUT_S = 10.0
# Output retries back off up to this; well under max_poll_interval_ms.
RETRY_MAX_PAUSE_S = 20.0
MAX_OUTPUT_FAILURES = 8
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class DetectorStats:
    """Counters of one run."""

    records: int = 0
    readings: int = 0
    warmup_records: int = 0
    late: int = 0
    detections: int = 0
    resumed: int = 0
    restart_cleared: int = 0
    no_data_opened: int = 0
    no_data_cleared: int = 0
    wills: int = 0
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
    # device -> (kind, location) of the decoded messages
    devices: dict[str, tuple[str, str | None]]


class DetectorService(ConsumerService):
    """Consumes readings, runs the detection engine, stores and publishes detections.

    Args:
        settings: the frozen settings (``kafka``, ``db``, ``detection``, ``metrics``).

    Attributes:
        metrics: this service's Prometheus series (served while running when
            ``metrics.enabled``).
        engine: the detection engine and its per-stream state.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cfg = settings.detection
        self.metrics = DetectorMetrics()
        self.engine = DetectionEngine(settings.detection)
        self._stats = DetectorStats()
        self._warmup_until: dict[TopicPartition, int] = {}
        self._devices_of: dict[TopicPartition, set[str]] = {}
        # streams whose stored open episodes were reconciled since their assignment
        self._reconciled: set[int] = set()
        # devices whose stored open no_data was looked up since their assignment
        self._dev_reconciled: set[str] = set()
        self.liveness = LivenessTracker(settings.detection)
        self._dev_streams: dict[str, list[int]] = {}
        self._next_check_s = 0.0
        self._store: DetectionStore | None = None
        self._producer: AIOKafkaProducer | None = None
        self.registry = RegistryView(
            settings.db_url(), settings.ingest.registry_refresh_s, on_change=self._sites_changed
        )
        self._loop = ConsumerLoop(
            settings,
            self._cfg,
            name="detector",
            # device events: last wills (see the module docstring)
            topics=[settings.kafka.readings_topic, settings.kafka.events_topic],
            extra_topics=[settings.kafka.detections_topic],
            handle=self._handle,
            tick=self._tick,
            metrics=self.metrics,
            on_assigned=self._on_assigned,
            on_revoked=self._on_revoked,
            # the engine has seen the batch: a rewind would feed it twice
            rewind_on_backpressure=False,
        )

    @property
    def stats(self) -> DetectorStats:
        """The counters so far."""
        return self._stats

    async def _on_assigned(self, partitions: set[TopicPartition]) -> None:
        consumer = self._loop.consumer
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
        if devices:
            ids = self.engine.streams.ids_for_devices(devices)
            self._reconciled.difference_update(ids.tolist())
            self._dev_reconciled.difference_update(devices)
            self.liveness.forget(devices)
            self.engine.reset_streams(ids)

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

    # -- the loop --------------------------------------------------------------------------

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        max_readings: int | None = None,
        timeout_s: float | None = None,
    ) -> DetectorStats:
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
            RuntimeError: this detector already ran.
        """
        s = self._settings
        started = time.monotonic()
        try:
            await wait_for_database(s.db_url(), start_wait_s(s.db.start_timeout_s, timeout_s))
            async with AsyncExitStack() as stack:
                self._store = await stack.enter_async_context(DetectionStore(s.db_url(), s.db))
                try:
                    await self.registry.start(s.db.start_timeout_s)
                    stack.push_async_callback(self.registry.close)
                except FatalError as exc:
                    log.warning("device registry not read; location classes from messages only",
                                error=str(exc))  # fmt: skip
                self._producer = await stack.enter_async_context(self._open_producer())
                await self._loop.run(stop, max_items=max_readings, timeout_s=timeout_s)
        finally:
            self._stats.elapsed_s = time.monotonic() - started
        log.info("detector stopped", summary=self._stats.summary())
        return self._stats

    async def _handle(self, batch: Batch) -> int:
        """Detect over one batch, store and publish its outputs; returns live readings."""
        t0 = time.perf_counter()
        warm: list[Any] = []
        live: list[Any] = []
        wills: list[DetectionRecord] = []
        events_topic = self._settings.kafka.events_topic
        for tp, recs in batch.items():
            until = self._warmup_until.get(tp)
            if tp.topic == events_topic:
                wills += self._wills([r for r in recs if until is None or r.offset >= until])
                if until is not None and recs and recs[-1].offset + 1 >= until:
                    self._warmup_until.pop(tp, None)
                continue
            for rec in recs:
                (warm if until is not None and rec.offset < until else live).append(rec)
            if until is not None and recs and recs[-1].offset + 1 >= until:
                self._warmup_until.pop(tp, None)
        if warm:
            # windows only: these records' detections were made durable before the commit
            self._detect(self._decode(warm, seed=True))
            self._stats.warmup_records += len(warm)
        decoded = self._decode(live, seed=False)
        restart_clears = await self._reconcile(decoded.stream)
        back = self._arrived(decoded)
        output = self._detect(decoded)
        records = [*restart_clears, *back, *wills, *to_records(output.events, self.engine.streams)]
        await self._write_outputs(records, output.derived)
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
        return output.readings

    def _detect(self, decoded: _Decoded) -> EngineOutput:
        usable = self.engine.usable(decoded.flags, decoded.value)
        return self.engine.process(
            decoded.stream, decoded.ts_ns, decoded.value, usable, flags=decoded.flags
        )

    def _decode(self, recs: Sequence[Any], *, seed: bool) -> _Decoded:
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
            if seed:
                # known from before the restart: timed from now, so an outage of the
                # detector itself (a backlog still to read) never pages every device at once
                h = batch.header
                self.liveness.seed(
                    batch.device_id, h.kind.value,
                    h.location.value if h.location is not None else None, time.time(),
                )  # fmt: skip
            batches.append(batch)
        frame = ReadingFrame.of(batches)
        devices = {
            b.device_id: (
                b.header.kind.value,
                b.header.location.value if b.header.location is not None else None,
            )
            for b in batches
        }
        return _Decoded(
            frame.ids(self._stream_of),
            frame.ts_us * 1000,
            frame.value,
            frame.flag,
            len(frame),
            devices,
        )

    def _sites_changed(self, view: RegistryView) -> None:
        """The registry changed: hand CEMS units their benchmark class and site pressure."""
        for rec in view.records.values():
            if rec.kind is SourceKind.CEMS:
                self.engine.cems.set_site(rec.device_id, rec.cems_class, rec.baro_pressure_pa())

    def _stream_of(self, batch: ReadingBatch, metric: str) -> int:
        """The engine's stream of (device, metric), registered on first sight.

        A registered device's location class is the registry's; an unregistered one's is
        what its messages name.
        """
        h = batch.header
        sid = self.engine.streams.get(h.device_id, metric)
        if sid is None:
            known = self.registry.record(h.device_id)
            location = known.location_class if known is not None else None
            location = location if location is not None else h.location
            loc = location.value if location is not None else None
            sid = self.engine.register(h.device_id, metric, parse_kind(h.kind.value), loc)
            self._dev_streams.setdefault(h.device_id, []).append(sid)
        return sid

    async def _reconcile(self, streams: np.ndarray) -> list[DetectionRecord]:
        """Reconcile the stored open episodes of streams seen live for the first time.

        Runs after the warm-up rebuilt their state and before their first live reading
        (see the module docstring). Returns the CLEARED records of stored episodes that
        are no longer open, to be written and published with the batch.
        """
        fresh = [i for i in np.unique(streams).tolist() if i not in self._reconciled]
        if not fresh:
            return []
        infos = self.engine.streams.infos
        pairs = [(infos[i].device_id, infos[i].metric) for i in fresh]
        devices = {d for d, _ in pairs} - self._dev_reconciled
        stored = await self._read_open(pairs + [(d, DEVICE_METRIC) for d in sorted(devices)])
        self._reconciled.update(fresh)
        self._dev_reconciled |= devices
        clears: list[DetectionRecord] = []
        continued: set[tuple[int, str]] = set()
        for rec in stored:
            if rec.metric == DEVICE_METRIC:
                # a device silent before the restart: its next reading clears this one
                self.liveness.adopt(rec)
                continue
            sid = self.engine.streams.get(rec.device_id, rec.metric)
            det = Detector.__members__.get(rec.detector.upper())
            if sid is None or det is None:
                continue
            if (sid, rec.detector) in continued:
                reason = RESTART_DUPLICATE
            else:
                onset_ns = (rec.started_at - _EPOCH) // timedelta(microseconds=1) * 1000
                verdict = self.engine.resume_episode(sid, det, onset_ns)
                if verdict is None:
                    continue
                if verdict:
                    continued.add((sid, rec.detector))
                    self._stats.resumed += 1
                    log.info("open detection continued after restart",
                             detection_id=rec.detection_id, detector=rec.detector)  # fmt: skip
                    continue
                reason = RESTART_CLOSED
            mark = self.engine.watermark_ns(sid)
            ended = rec.started_at
            if mark != NEVER_NS:
                ended = max(ended, ns_to_datetime(mark))
            clears.append(
                rec.model_copy(
                    update={
                        "state": DetectionState.CLEARED,
                        "ended_at": ended,
                        "evidence": {**rec.evidence, reason: 1.0},
                    }
                )
            )
            self._stats.restart_cleared += 1
            log.info("stored open detection cleared after restart", reason=reason,
                     detection_id=rec.detection_id, detector=rec.detector)  # fmt: skip
        return clears

    async def _read_open(self, pairs: list[tuple[str, str]]) -> list[DetectionRecord]:
        """The stored open detections of (device, metric) pairs, retried like the outputs."""
        store = self._store
        assert store is not None, "outside run()"
        failures = 0
        while True:
            try:
                return await store.open_detections(pairs)
            except TransientError as exc:
                failures += 1
                if failures >= MAX_OUTPUT_FAILURES or self._loop.stopping:
                    raise
                wait_s = min(RETRY_MAX_PAUSE_S, exc.retry_after * 2 ** (failures - 1))
                log.warning("open detections unreadable: pausing input", error=str(exc),
                            wait_s=wait_s, failures=failures)  # fmt: skip
                await self._loop.pause(wait_s)

    # -- liveness --------------------------------------------------------------------------

    def _arrived(self, decoded: _Decoded) -> list[DetectionRecord]:
        """Live messages arrived now: their devices are alive; clear their no_data."""
        now = time.time()
        out = []
        for dev, (kind, location) in decoded.devices.items():
            rec = self.liveness.seen(dev, kind, location, now)
            if rec is not None:
                out.append(rec)
                self._stats.no_data_cleared += 1
                log.info("device back: no_data cleared", device_id=dev)
        return out

    def _wills(self, recs: Sequence[Any]) -> list[DetectionRecord]:
        """Devices' last wills on the device-events topic: each raises no_data at once."""
        out = []
        for rec in recs:
            try:
                event = DeviceEventRecord.model_validate_json(rec.value or b"")
            except ValueError:
                log.warning("device event not understood; skipped", offset=rec.offset)
                continue
            if event.event is not DeviceEvent.OFFLINE:
                continue
            kind = event.kind if event.kind in KIND_NAMES.values() else "generic"
            self._stats.wills += 1
            now = time.time()
            if now - event.received_at.timestamp() > self._cfg.no_data_floor_s:
                self.liveness.seed(event.device_id, kind, None, now)
                continue
            opened = self.liveness.will(event.device_id, kind, now)
            if opened is not None:
                out.append(opened)
                self._stats.no_data_opened += 1
                log.warning("device last will: no_data", device_id=event.device_id)
        return out

    def _allowance_s(self, device_id: str) -> float:
        ids = self._dev_streams.get(device_id)
        if not ids:
            return 0.0
        return float(self.engine.silence_allowance_s(np.asarray(ids, np.int64)).max())

    async def _tick(self) -> None:
        """After every poll: every ``no_data_check_s``, raise no_data for silent devices."""
        now = time.time()
        if now < self._next_check_s or self._store is None:
            return
        self._next_check_s = now + self._cfg.no_data_check_s
        due = self.liveness.due(now, self._allowance_s)
        if not due:
            return
        fresh = [d for d in due if d not in self._dev_reconciled]
        if fresh:
            # silent since before a restart: continue a no_data stored open, never double it
            for stored in await self._read_open([(d, DEVICE_METRIC) for d in fresh]):
                self.liveness.adopt(stored)
            self._dev_reconciled.update(fresh)
        records = []
        for dev in due:
            allowed = max(self._cfg.no_data_floor_s, self._allowance_s(dev))
            rec = self.liveness.open(dev, now, allowed)
            if rec is not None:
                records.append(rec)
                self._stats.no_data_opened += 1
                log.warning("device silent: no_data", device_id=dev, allowed_s=round(allowed, 1))
        if records:
            await self._write_outputs(records, DerivedTable.empty())

    async def _write_outputs(self, records: list[DetectionRecord], derived: DerivedTable) -> None:
        """Database, then Kafka; on a transient failure pause input and retry the same."""
        if not records and not len(derived):
            return
        store, producer = self._store, self._producer
        assert store is not None, "outside run()"
        assert producer is not None, "outside run()"
        failures = 0
        while True:
            try:
                await store.write(records, derived)
                await self._produce(producer, records)
            except TransientError as exc:
                failures += 1
                self._stats.output_retries += 1
                if failures >= MAX_OUTPUT_FAILURES or self._loop.stopping:
                    raise
                wait_s = min(RETRY_MAX_PAUSE_S, exc.retry_after * 2 ** (failures - 1))
                log.warning("detection output failed: pausing input", error=str(exc),
                            wait_s=wait_s, failures=failures)  # fmt: skip
                await self._loop.pause(wait_s)
                continue
            return

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
