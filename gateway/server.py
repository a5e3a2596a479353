"""The HJ 212-2017 gateway: a TCP server for data loggers, producing to Kafka like the bridge.

What a frame goes through, in order (each connection is its own task, frames of one
connection in arrival order; a slow or stuck logger holds only its own connection):

1. :func:`wire.hj212.split_stream` cuts frames off the connection's bytes (a frame is at most
   :data:`~wire.hj212.MAX_FRAME_BYTES`; a partial one must be whole within
   ``gateway.frame_timeout_s``, and a connection silent for ``gateway.read_timeout_s`` is
   closed). :func:`wire.hj212.parse_frame` checks header, length, CRC and fields.
2. The MN and PW are resolved by the :class:`~gateway.directory.LoggerDirectory` (in memory:
   the ``gateway.loggers`` settings or a cached view of the device registry, see
   :mod:`gateway.registry_directory`); a directory that fails refuses the frame (dead letter
   ``unknown_mn`` with the error), it never ends the connection.
3. A data packet that is stored (``gateway.live_cns``, or history the gateway asked for) is
   mapped to a wire-contract payload (:mod:`gateway.mapping`) and validated by
   :func:`wire.validate.validate_messages`, exactly as an MQTT message on the device's data
   topic: accepted readings are produced to ``kafka.readings_topic`` keyed by the device id in
   the same record format; a rejected packet, and every refused frame, becomes a
   :class:`~wire.schemas.DeadLetterRecord` with its reason and the raw frame, topic
   ``hj212/<MN>``.
4. Only when Kafka confirmed (``acks=all``; a failed produce is retried until it succeeds or
   the gateway stops) does the logger get its data answer (9014) when its Flag asks for one.
   Reading does not wait for that: a connection reads on and hands its frames' records to the
   producer at once, up to ``gateway.frames_in_flight`` frames ahead of the oldest one not yet
   confirmed (then it stops reading: a slow Kafka slows the logger's socket, and only its
   own). What a frame causes once confirmed (its answer, the last confirmed data time, a gap
   opened and the history asked for, a gap closed by a 9012) runs in frame order, each frame
   after its own confirmation and after every earlier frame's: a gap is never closed while
   history sent before the 9012 is unconfirmed. The producer keeps several batches in flight
   (done-callbacks, as the bridge), all connections' records together.
   A refused frame (bad CRC, unknown MN, wrong PW…) gets no answer: the logger sends it again.
   Unanswered, the logger keeps the packet and re-sends it: nothing confirmed is lost, and a
   re-sent reading is stored once (readings are keyed by device, metric and time).
5. A live packet more than ``gateway.backfill_min_gap_s`` after the previous confirmed one
   (plus its CN's period: a minute, an hour or a day for 2051/2061/2031 uploads) opens a gap
   (:mod:`gateway.backfill`); the gateway asks the logger for its history over the gap
   (``gateway.backfill_cn``, BeginTime/EndTime) on this and every later connection until the
   logger reports the request executed (9012, ExeRtn=1).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from adapters.kafka import (
    OutgoingRecord,
    RecordProducer,
    delivery_error,
    ensure_topics,
)
from adapters.metrics import MetricsServer
from core.errors import BrokerUnavailable, FatalError, GhgwatchError
from core.logs import RepeatLimiter
from core.settings import Settings
from gateway.backfill import BackfillState, Gap
from gateway.directory import (
    LoggerDirectory,
    LoggerIdentity,
    LoggerRefusal,
    RefusalReason,
    StaticDirectory,
)
from gateway.mapping import AVERAGE_CNS, REALTIME_CN, CodeTable, Unmappable, frame_payload
from gateway.metrics import GatewayMetrics
from wire.hj212 import (
    DATA_CNS,
    FLAG_ACK,
    FLAG_V2017,
    Frame,
    FrameError,
    answer_segment,
    build_frame,
    build_segment,
    format_time,
    history_request,
    new_qn,
    parse_frame,
    parse_time,
    split_stream,
)
from wire.schemas import DeadLetterRecord, RejectReason, safe_text
from wire.validate import (
    MAX_DEAD_TOPIC_CHARS,
    AcceptedMessage,
    RejectedMessage,
    validate_messages,
)

__all__ = ["Gateway"]

log = structlog.get_logger(__name__)

READ_CHUNK = 65_536
WRITE_TIMEOUT_S = 10.0
PRODUCE_BACKOFF_MIN_S = 0.2
# Records queued by all connections go out together after this pause, at most this many.
PRODUCE_LINGER_S = 0.002
PRODUCE_BATCH_MAX = 2000
PRODUCE_BACKOFF_MAX_S = 5.0
STOP_TIMEOUT_S = 10.0
STATE_SAVE_INTERVAL_S = 1.0
REPEAT_LOG_INTERVAL_S = 60.0
REPEAT_LOG_KEYS_MAX = 10_000
_DETAIL_CHARS = 1000
# Answers to the gateway's own requests and heartbeats some loggers send: never answered.
_ANSWER_CNS = frozenset({"9011", "9012", "9013", "9014"})
_TIME_CALIBRATION_REQUEST = "1013"
_SET_TIME = "1012"
_STORED_CNS = AVERAGE_CNS | {REALTIME_CN}
# How far apart a CN's uploads lie by nature: a live minute, hourly or daily upload that
# follows the previous one by its period is no outage (real-time: the logger's interval).
_CN_PERIOD = {"2051": timedelta(minutes=1), "2061": timedelta(hours=1), "2031": timedelta(days=1)}


class _Stopping(Exception):
    """The gateway stops: leave the frame unanswered (the logger re-sends it)."""


_Waiter = asyncio.Future[None]
_Outgoing = tuple[OutgoingRecord, _Waiter]


@dataclass(eq=False, slots=True)
class _Step:
    """What is left of a frame once read: ``then`` runs when ``waits`` are confirmed."""

    waits: Sequence[_Waiter]
    then: Callable[[], None] | None
    started: float | None  # perf_counter when the frame was read, for frame_seconds


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    peer: str
    window: int
    mns: set[str] = field(default_factory=set)
    requests: dict[str, tuple[str, Gap]] = field(default_factory=dict)  # QN -> (MN, gap)
    steps: deque[_Step] = field(default_factory=deque)  # in frame order
    room: asyncio.Event = field(default_factory=asyncio.Event)  # fewer than window steps
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # no step left
    ended: str | None = None  # why the answering gave the connection up

    def __post_init__(self) -> None:
        self.room.set()
        self.drained.set()


def _backoff_s(attempt: int) -> float:
    return min(PRODUCE_BACKOFF_MAX_S, PRODUCE_BACKOFF_MIN_S * 2.0**attempt) * random.uniform(
        0.5, 1.0
    )


class Gateway:
    """Accepts HJ 212-2017 data loggers over TCP and puts their readings on Kafka.

    Args:
        settings: sections ``gateway``, ``kafka``, ``mqtt`` (topic root) and ``metrics``.
        directory: resolves MN/PW to devices; default the ``gateway.loggers`` settings.

    Attributes:
        metrics: the live series (served when ``metrics.enabled``).
        port: the port listened on once started.
    """

    def __init__(self, settings: Settings, directory: LoggerDirectory | None = None) -> None:
        cfg = settings.gateway
        self._settings = settings
        self._cfg = cfg
        self._directory = directory if directory is not None else StaticDirectory(cfg)
        self._codes = CodeTable(cfg.codes)
        self._tz: tzinfo = ZoneInfo(cfg.timezone)
        self._root = settings.mqtt.topic_root
        self._readings_topic = settings.kafka.readings_topic
        self._deadletter_topic = settings.kafka.deadletter_topic
        state_file = cfg.state_file or settings.data_dir / "hj212-state.json"
        self._state = BackfillState(
            state_file,
            min_gap=timedelta(seconds=cfg.backfill_min_gap_s),
            max_age=timedelta(seconds=cfg.backfill_max_s),
        )
        self.metrics = GatewayMetrics()
        self.port: int | None = None
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._producer: RecordProducer | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_mn: dict[str, _Conn] = {}
        self._fatal: GhgwatchError | None = None
        self._outbox: list[_Outgoing] = []
        self._outbox_ready = asyncio.Event()
        self._retry: list[_Outgoing] = []
        self._retry_ready = asyncio.Event()
        self._retry_attempt = 0
        self._log_limit = RepeatLimiter(REPEAT_LOG_INTERVAL_S, REPEAT_LOG_KEYS_MAX)

    async def wait_started(self, timeout_s: float) -> int:
        """Wait until the server listens; returns its port."""
        async with asyncio.timeout(timeout_s):
            await self._started.wait()
        assert self.port is not None
        return self.port

    @property
    def connections(self) -> int:
        """Open logger connections."""
        return len(self._conns)

    def open_gaps(self, mn: str) -> list[Gap]:
        """The outages of ``mn`` whose history is still to come, oldest first."""
        return self._state.gaps(mn)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set.

        Raises:
            FatalError: Kafka refused the gateway for good.
        """
        if stop is not None:
            self._stop = stop
        metrics_server = None
        if self._settings.metrics.enabled:
            metrics_server = MetricsServer(
                self.metrics.registry, self._settings.metrics.host, self._cfg.metrics_port
            )
        try:
            producer = await self._start_producer()
            if producer is None:
                return
            self._producer = producer
            server = await asyncio.start_server(self._serve, self._cfg.host, self._cfg.port)
            self.port = int(server.sockets[0].getsockname()[1])
            log.info("hj212 gateway listening", host=self._cfg.host, port=self.port)
            self._started.set()
            saver = asyncio.create_task(self._save_loop(), name="hj212-state")
            sender = asyncio.create_task(self._produce_loop(), name="hj212-produce")
            retrier = asyncio.create_task(self._retry_loop(), name="hj212-retry")
            try:
                async with server:
                    await self._stop.wait()
                    server.close()
                    self._abandon_outbox()
                    await self._close_all()
            finally:
                for task in (saver, sender, retrier):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                self._abandon_outbox()
                self._state.save()
                await producer.stop(STOP_TIMEOUT_S)
        finally:
            self._started.set()
            if metrics_server is not None:
                metrics_server.close()
        if self._fatal is not None:
            raise self._fatal

    async def _start_producer(self) -> RecordProducer | None:
        kafka, bootstrap = self._settings.kafka, self._settings.kafka_bootstrap()
        attempt = 0
        while not self._stop.is_set():
            try:
                await ensure_topics(
                    kafka, bootstrap, [self._readings_topic, self._deadletter_topic]
                )
                producer = RecordProducer(kafka, bootstrap)
                await producer.start()
            except BrokerUnavailable as exc:
                log.warning("kafka not reachable; retrying", error=str(exc), attempt=attempt)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_backoff_s(attempt)):
                        await self._stop.wait()
                attempt += 1
                continue
            return producer
        return None

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(STATE_SAVE_INTERVAL_S)
            self._state.save()

    async def _close_all(self) -> None:
        for conn in list(self._conns):
            self._give_up(conn, "stopping")
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)

    # -- a connection --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else "unknown"
        if len(self._conns) >= self._cfg.max_connections or self._stop.is_set():
            self.metrics.refused_connections.inc()
            if self._log_limit.allow("connections", "full"):
                log.warning("connection refused: max_connections reached", peer=peer)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn(writer, peer, self._cfg.frames_in_flight)
        self._conns.add(conn)
        self.metrics.connections.set(len(self._conns))
        why = "closed"
        try:
            why = await self._read_loop(conn, reader)
            await conn.drained.wait()  # what was read is answered (or given up)
            why = conn.ended or why
        except (ConnectionError, OSError) as exc:
            why = conn.ended or "error"
            if conn.ended is None:
                log.info("logger connection error", peer=peer, error=str(exc))
        finally:
            self._give_up(conn, why)
            self._conns.discard(conn)
            for mn in conn.mns:
                if self._by_mn.get(mn) is conn:
                    del self._by_mn[mn]
            self.metrics.connections.set(len(self._conns))
            self.metrics.closed.labels(why).inc()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            self._tasks.discard(task)

    async def _read_loop(self, conn: _Conn, reader: asyncio.StreamReader) -> str:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        partial_since: float | None = None
        while not self._stop.is_set() and conn.ended is None:
            # Answers the logger does not read are not piled up without end.
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await conn.writer.drain()
            except TimeoutError as exc:
                raise ConnectionError("logger does not read its answers") from exc
            timeout = self._cfg.read_timeout_s
            if partial_since is not None:
                timeout = min(timeout, partial_since + self._cfg.frame_timeout_s - loop.time())
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                if partial_since is not None:
                    self._refuse_bytes(conn, bytes(buffer), "frame not whole in time")
                    return "slow_frame"
                return "idle"
            final = not data
            buffer.extend(data)
            took = False
            for item in split_stream(buffer, final=final):
                took = True
                await self._handle(conn, item)
            if conn.ended is not None:
                return conn.ended
            if final:
                return "closed"
            # The frame still arriving is timed from when it began to be the first one (not
            # from before a wait for room in the window).
            if not buffer:
                partial_since = None
            elif took or partial_since is None:
                partial_since = loop.time()
        return conn.ended or "stopping"

    def _refuse_bytes(self, conn: _Conn, raw: bytes, detail: str) -> None:
        waiter = self._dead_letter(
            conn, None, None, RejectReason.TRUNCATED, detail, raw, datetime.now(UTC)
        )
        self._stage(conn, [waiter], None, None)

    async def _handle(self, conn: _Conn, item: bytes | FrameError) -> None:
        if not conn.room.is_set():
            # As many frames in flight as allowed: read no more until the oldest is confirmed.
            self.metrics.window_full.inc()
            await conn.room.wait()
        if conn.ended is not None:
            return  # given up: the rest stays unanswered, the logger re-sends it
        received_at = datetime.now(UTC)
        started = time.perf_counter()
        frame = parse_frame(item) if isinstance(item, bytes) else item
        if isinstance(frame, FrameError):
            waiter = self._dead_letter(
                conn, None, None, RejectReason(frame.problem.value), frame.detail,
                frame.raw, received_at,
            )  # fmt: skip
            self._stage(conn, [waiter], None, None)
            return
        self.metrics.frames.labels(frame.cn).inc()
        who = await self._resolve(frame)
        if conn.ended is not None:
            return
        if isinstance(who, LoggerRefusal):
            detail = f"MN {frame.mn[:40]!r}: {who.reason.value}"
            waiter = self._dead_letter(
                conn, frame.mn, None, RejectReason(who.reason.value),
                f"{detail}; {who.detail}" if who.detail else detail, frame.raw, received_at,
            )  # fmt: skip
            self._stage(conn, [waiter], None, None)
            return
        if frame.mn not in conn.mns:
            self._bind(conn, frame, who)
        cn = frame.cn
        if cn in _ANSWER_CNS:
            self._on_answer(conn, frame)
            return
        if cn == _TIME_CALIBRATION_REQUEST:
            self._stage(conn, [], functools.partial(self._set_time, conn, frame), None)
            return
        if cn not in DATA_CNS:
            waiter = self._dead_letter(
                conn, frame.mn, who, RejectReason.UNKNOWN_CN,
                f"CN {cn} is not a command a logger sends", frame.raw, received_at,
            )  # fmt: skip
            self._stage(conn, [waiter], None, None)
            return
        waits: list[_Waiter] = []
        then: Callable[[], None] | None = None
        if cn in _STORED_CNS:
            live = cn in self._cfg.live_cns
            if live or self._asked_for(conn, frame):
                waits, then = self._store(conn, frame, who, received_at, live=live)
            else:
                self.metrics.not_stored.labels(cn).inc()
        else:
            self.metrics.not_stored.labels(cn).inc()
        answer = build_frame(answer_segment(frame, "9014")) if frame.wants_answer else None
        self._stage(conn, waits, functools.partial(self._confirmed, conn, then, answer), started)

    async def _resolve(self, frame: Frame) -> LoggerIdentity | LoggerRefusal:
        """The directory's answer; a directory that fails refuses the frame (never raises)."""
        try:
            return await self._directory.resolve(frame.mn, frame.pw)
        except Exception as exc:  # a failing directory must not end the connection or more
            if self._log_limit.allow("directory", type(exc).__name__):
                log.warning("logger directory failed", mn=frame.mn[:40], error=repr(exc)[:200])
            return LoggerRefusal(
                RefusalReason.UNKNOWN_MN, f"logger directory failed: {str(exc)[:200]}"
            )

    def _confirmed(
        self, conn: _Conn, then: Callable[[], None] | None, answer: bytes | None
    ) -> None:
        """A data packet is in Kafka (or was not to be stored): its effects, then its answer."""
        if then is not None:
            then()
        if answer is not None:
            self._send(conn, answer, "9014")

    def _set_time(self, conn: _Conn, frame: Frame) -> None:
        now = format_time(datetime.now(UTC), self._tz)
        segment = build_segment(
            qn=new_qn(datetime.now(UTC), self._tz), st=frame.st, cn=_SET_TIME,
            pw=frame.pw, mn=frame.mn, flag=FLAG_V2017 | FLAG_ACK, cp=f"SystemTime={now}",
        )  # fmt: skip
        self._send(conn, build_frame(segment), _SET_TIME)

    # -- the answer stage of a connection ----------------------------------------------------

    def _stage(
        self,
        conn: _Conn,
        waits: Sequence[_Waiter],
        then: Callable[[], None] | None,
        started: float | None,
    ) -> None:
        """Queue what a frame causes once ``waits`` are confirmed, after every earlier frame's."""
        if conn.ended is not None:
            return
        conn.steps.append(_Step(waits, then, started))
        self.metrics.frames_in_flight.inc()
        conn.drained.clear()
        if len(conn.steps) >= conn.window:
            conn.room.clear()
        advance = functools.partial(self._advance_later, conn)
        for waiter in waits:
            if not waiter.done():
                waiter.add_done_callback(advance)
        self._advance(conn)

    def _advance_later(self, conn: _Conn, _waiter: _Waiter) -> None:
        self._advance(conn)

    def _advance(self, conn: _Conn) -> None:
        """Run the oldest steps whose records are confirmed, in order, up to one still waiting."""
        steps = conn.steps
        while steps and conn.ended is None:
            step = steps[0]
            if not all(waiter.done() for waiter in step.waits):
                break
            steps.popleft()
            self.metrics.frames_in_flight.dec()
            if any(w.cancelled() or w.exception() is not None for w in step.waits):
                self._give_up(conn, "stopping")  # the gateway stops or Kafka refused us
                return
            if step.then is not None:
                try:
                    step.then()
                except Exception as exc:  # a bug must close this connection, not the gateway
                    log.exception("hj212 answer failed", peer=conn.peer, error=repr(exc))
                    self._give_up(conn, "error")
                    return
            if step.started is not None:
                self.metrics.frame_seconds.observe(time.perf_counter() - step.started)
        if len(steps) < conn.window:
            conn.room.set()
        if not steps:
            conn.drained.set()

    def _give_up(self, conn: _Conn, why: str) -> None:
        """Stop answering ``conn``: what is still waiting stays unanswered; close it."""
        if conn.ended is None:
            conn.ended = why
            self.metrics.frames_in_flight.dec(len(conn.steps))
            conn.steps.clear()
        conn.room.set()
        conn.drained.set()
        conn.writer.close()

    def _bind(self, conn: _Conn, frame: Frame, who: LoggerIdentity) -> None:
        """The first frame of ``frame.mn`` on this connection: it is where the logger is now."""
        conn.mns.add(frame.mn)
        # A reconnected logger's old connection may linger half-open until its read timeout;
        # it is not closed here (a connection may carry several MNs), just no longer used.
        self._by_mn[frame.mn] = conn
        log.info("logger connected", mn=frame.mn, device=who.device_id, peer=conn.peer)
        for gap in self._state.gaps(frame.mn):
            request = functools.partial(self._request_history, conn, frame, gap)
            self._stage(conn, [], request, None)

    def _asked_for(self, conn: _Conn, frame: Frame) -> bool:
        """Is this packet history the gateway asked this logger for?"""
        if frame.cn != self._cfg.backfill_cn or not conn.requests:
            return False
        data_time = parse_time(frame.cp.get("DataTime", ""), self._tz)
        if data_time is None:
            return True  # stored path refuses it with the reason
        return any(
            mn == frame.mn and gap.begin <= data_time <= gap.end
            for mn, gap in conn.requests.values()
        )

    def _on_answer(self, conn: _Conn, frame: Frame) -> None:
        if frame.cn == "9011" and frame.qn in conn.requests:
            if frame.cp.get("QnRtn") != "1":
                log.warning(
                    "logger refused a history request", mn=frame.mn, qn_rtn=frame.cp.get("QnRtn")
                )
        elif frame.cn == "9012" and frame.qn in conn.requests:
            # Later packets are no longer history asked for; but the gap is closed only once
            # every frame before this one is in Kafka (the stage runs it after them).
            mn, gap = conn.requests.pop(frame.qn)
            done = functools.partial(self._request_done, mn, gap, frame.cp.get("ExeRtn"))
            self._stage(conn, [], done, None)

    def _request_done(self, mn: str, gap: Gap, exe_rtn: str | None) -> None:
        if exe_rtn == "1":
            self._state.filled(mn, gap)
            log.info("history backfilled", mn=mn, begin=gap.begin.isoformat(),
                     end=gap.end.isoformat())  # fmt: skip
        else:
            log.warning("history request failed", mn=mn, exe_rtn=exe_rtn)

    def _request_history(self, conn: _Conn, frame: Frame, gap: Gap) -> None:
        qn = new_qn(datetime.now(UTC), self._tz)
        while qn in conn.requests:  # two requests in the same millisecond
            qn = str(int(qn) + 1)
        request = history_request(
            qn=qn, st=frame.st, cn=self._cfg.backfill_cn, pw=frame.pw, mn=frame.mn,
            begin=gap.begin, end=gap.end, tz=self._tz,
        )  # fmt: skip
        conn.requests[qn] = (frame.mn, gap)
        self.metrics.backfill_requests.inc()
        log.info("asking for history", mn=frame.mn, cn=self._cfg.backfill_cn,
                 begin=gap.begin.isoformat(), end=gap.end.isoformat())  # fmt: skip
        self._send(conn, request, self._cfg.backfill_cn)

    def _store(
        self, conn: _Conn, frame: Frame, who: LoggerIdentity, received_at: datetime, *, live: bool
    ) -> tuple[list[_Waiter], Callable[[], None] | None]:
        """Hand a data packet's record to the producer; returns what to wait for and then do."""
        mapped = frame_payload(frame, who.kind, who.location, self._codes, self._tz)
        if isinstance(mapped, Unmappable):
            waiter = self._dead_letter(
                conn, frame.mn, who, RejectReason.SCHEMA, mapped.detail, frame.raw, received_at
            )
            return [waiter], None
        if mapped.skipped_codes:
            self.metrics.skipped_codes.inc(len(mapped.skipped_codes))
        if mapped.readings == 0:
            self.metrics.not_stored.labels(frame.cn).inc()
            return [], None
        topic = who.ref.data_topic(self._root)
        verdict = validate_messages([(topic, mapped.payload, received_at)], root=self._root)[0]
        if isinstance(verdict, AcceptedMessage):
            record: OutgoingRecord = (
                self._readings_topic,
                verdict.device_id.encode(),
                verdict.value,
            )
            waiters = self._submit([record])
            data_time = parse_time(frame.cp["DataTime"], self._tz) if live else None
            stored = functools.partial(self._stored, conn, frame, mapped.readings, data_time)
            return waiters, stored
        if isinstance(verdict, RejectedMessage):
            reason, detail = verdict.record.reason, verdict.record.detail
        else:  # a device event cannot come out of a data packet's mapping
            reason, detail = RejectReason.SCHEMA, "not a reading"
        waiter = self._dead_letter(conn, frame.mn, who, reason, detail, frame.raw, received_at)
        return [waiter], None

    def _stored(self, conn: _Conn, frame: Frame, readings: int, data_time: datetime | None) -> None:
        """Kafka has a data packet's readings; ``data_time``: of a live one."""
        self.metrics.readings.inc(readings)
        if data_time is None:
            self.metrics.backfill_readings.inc(readings)
            return
        period = _CN_PERIOD.get(frame.cn, timedelta(0))
        gap = self._state.confirmed(frame.mn, data_time, datetime.now(UTC), period)
        if gap is not None:
            self._request_history(conn, frame, gap)

    # -- Kafka -----------------------------------------------------------------------------------

    def _dead_letter(
        self,
        conn: _Conn,
        mn: str | None,
        who: LoggerIdentity | None,
        reason: RejectReason,
        detail: str,
        raw: bytes,
        received_at: datetime,
    ) -> _Waiter:
        """Hand a dead letter to the producer; returns its confirmation."""
        self.metrics.rejected.labels(reason.value).inc()
        subject = mn if mn is not None else conn.peer.rsplit(":", 1)[0]
        topic = safe_text(f"hj212/{mn}" if mn is not None else f"hj212/peer/{subject}")
        topic = topic[:MAX_DEAD_TOPIC_CHARS]
        if self._log_limit.allow(subject, reason.value):
            log.warning(
                "hj212 frame rejected", peer=conn.peer, mn=mn, reason=reason.value,
                detail=detail[:200], frame=raw[:120].decode("ascii", errors="replace"),
            )  # fmt: skip
        device_id = who.device_id if who is not None else None
        record = DeadLetterRecord(
            mqtt_topic=topic,
            device_id=device_id,
            reason=reason,
            detail=safe_text(detail)[:_DETAIL_CHARS],
            received_at=received_at,
            payload_b64=base64.b64encode(raw).decode("ascii"),
        )
        key = device_id.encode() if device_id is not None else None
        return self._submit([(self._deadletter_topic, key, record.model_dump_json().encode())])[0]

    def _submit(self, records: Sequence[OutgoingRecord]) -> list[_Waiter]:
        """Hand records to the batcher; each future is done when Kafka confirmed its record.

        A future fails with :class:`_Stopping` when the gateway stops (or Kafka refused us for
        good) first.
        """
        loop = asyncio.get_running_loop()
        futures: list[_Waiter] = []
        for record in records:
            waiter: _Waiter = loop.create_future()
            self._outbox.append((record, waiter))
            futures.append(waiter)
        self._outbox_ready.set()
        return futures

    async def _produce_loop(self) -> None:
        """The one sender: everything the connections queued, one Kafka batch per partition.

        A produce per frame would send a batch per record (hundreds of tiny requests a
        second); like the bridge, the gateway produces what arrived together, together, and
        does not wait for a batch's confirmation before handing over the next: each batch's
        delivery settles its records when Kafka confirms it (a done-callback). The producer
        holds at most one queued batch per partition besides those on the wire, so handing
        over waits when Kafka is slower than the loggers. A record whose delivery failed
        goes to the retry loop and is sent again after a growing backoff, until it succeeds
        or the gateway stops.
        """
        producer = self._producer
        assert producer is not None
        while True:
            await self._outbox_ready.wait()
            await asyncio.sleep(PRODUCE_LINGER_S)
            items = self._outbox[:PRODUCE_BATCH_MAX]
            del self._outbox[:PRODUCE_BATCH_MAX]
            if not self._outbox:
                self._outbox_ready.clear()
            items = [item for item in items if not item[1].done()]
            if not items:
                continue
            sent, error = await producer.send_grouped([r for r, _f in items])
            handed: set[int] = set()
            for batch_future, indices in sent:
                batch = [items[i] for i in indices]
                batch_future.add_done_callback(functools.partial(self._on_delivered, batch))
                handed.update(indices)
            if error is not None:
                self._produce_failed(error, [it for i, it in enumerate(items) if i not in handed])

    def _on_delivered(self, batch: list[_Outgoing], future: asyncio.Future[Any]) -> None:
        error = delivery_error(future)
        if error is None:
            self._retry_attempt = 0
            for _record, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)
            return
        self._produce_failed(error, batch)

    def _produce_failed(self, error: GhgwatchError, items: list[_Outgoing]) -> None:
        """Records not delivered: retried later, or given up when stopping or refused for good."""
        if isinstance(error, FatalError):
            self._fail(error)
        if self._fatal is not None or self._stop.is_set():
            for _record, waiter in items:
                if not waiter.done():
                    waiter.set_exception(_Stopping())
            return
        self.metrics.produce_errors.inc()
        if self._producer is not None:
            # as the bridge: what the producer still holds fails now and is re-sent through a
            # fresh connection once the topics are checked (RecordProducer.abandon says why)
            self._producer.abandon("kafka unavailable; re-sent after the topics are checked")
        if self._log_limit.allow("kafka", "produce"):
            log.warning("kafka produce failed; retrying, loggers stay unanswered",
                        error=str(error))  # fmt: skip
        self._retry.extend(items)
        self._retry_ready.set()

    async def _retry_loop(self) -> None:
        """The one task re-sending failed deliveries, all together, after a growing backoff."""
        while True:
            await self._retry_ready.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_backoff_s(self._retry_attempt)):
                    await self._stop.wait()
            self._retry_attempt += 1
            stopping = self._fatal is not None or self._stop.is_set()
            if not stopping and not await self._topics_again():
                continue  # still unreachable: the records wait for the next round
            again, self._retry = self._retry, []
            self._retry_ready.clear()
            if stopping:
                for _record, waiter in again:
                    if not waiter.done():
                        waiter.set_exception(_Stopping())
                continue
            self._outbox[:0] = again
            self._outbox_ready.set()

    def _abandon_outbox(self) -> None:
        for _record, waiter in [*self._outbox, *self._retry]:
            if not waiter.done():
                waiter.set_exception(_Stopping())
        self._outbox.clear()
        self._retry.clear()

    async def _topics_again(self) -> bool:
        """As the bridge does: a broker that came back empty gets its topics before anything
        is produced again, then the abandoned producer connects afresh. True when done."""
        producer = self._producer
        assert producer is not None
        try:
            await producer.reconnect([self._readings_topic, self._deadletter_topic])
        except BrokerUnavailable:
            return False
        return True

    def _fail(self, exc: GhgwatchError) -> None:
        if self._fatal is None:
            log.error("gateway failing", error=str(exc))
            self._fatal = exc
            self._stop.set()

    # -- answering --------------------------------------------------------------------------------

    def _send(self, conn: _Conn, frame: bytes, cn: str) -> None:
        """Write an answer or request (the connection's reading waits while they pile up)."""
        if conn.ended is not None or conn.writer.is_closing():
            return
        conn.writer.write(frame)
        self.metrics.answers.labels(cn).inc()
