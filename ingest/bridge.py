"""The MQTT -> Kafka bridge: validate each message, produce it, tell the device, then ack.

What a message goes through, in order:

1. The MQTT session hands it over (at most ``mqtt.receive_maximum`` are unacknowledged at
   once: the broker holds the rest, which is the bridge's only buffer).
   The bridge subscribes to ``mqtt.topic_filters`` below the topic root (default ``#``,
   everything), so a topic off the data scheme is dead-lettered, not lost. What ghgwatch
   itself publishes there (device status replies, alert topics) is acknowledged and skipped.
2. :func:`wire.validate.validate_messages` accepts or rejects it, together with the other
   messages taken in the same pass; it never raises. With ``ingest.require_registration``
   an accepted message of a device that is not registered and enabled as that kind is
   rejected as ``unregistered``, checked against a :class:`~registry.RegistryView` held in
   memory (reloaded on change and every ``ingest.registry_refresh_s``; while the database
   is down the last view is kept, and at start no message is read before a view exists).
3. Accepted: its :class:`~wire.batch.ReadingBatch` is produced to ``kafka.readings_topic``
   keyed by ``device_id``. Rejected: a :class:`~wire.schemas.DeadLetterRecord` is produced to
   ``kafka.deadletter_topic`` and, when the topic names a device, a retained
   :class:`~wire.schemas.DeviceStatus` is queued for its status topic. A device's last will
   (``{"status": "offline"}`` on its data topic) is neither: a
   :class:`~wire.events.DeviceEventRecord` is produced to ``kafka.events_topic`` (the detector
   raises ``no_data`` from it) and the device gets no status.
4. Records are produced (``acks=all``) as one Kafka batch per partition per pass; a failed
   batch is retried with backoff until it succeeds or the bridge stops, never dropped
   (after a failure the bridge first makes sure its topics exist, as at start).
5. Only when Kafka confirmed is the message acknowledged; PUBACKs leave in arrival order.
   A rejected message's status reply never holds it: the replies go out from their own
   queue, in order per device, at most ``STATUS_QUEUE_PER_DEVICE`` waiting per device (a
   flood keeps the newest) and ``STATUS_PENDING_DEVICES_MAX`` devices, best effort: the
   dead letter is the record, the status a courtesy that a stop may leave unsent.

A stop (event, ``timeout_s`` or ``max_messages``) stops reading, waits up to
``DRAIN_TIMEOUT_S`` for in-flight produces, acknowledges them, flushes the producer and
disconnects. Whatever is still unacknowledged then is redelivered by the broker next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import random
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

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
from ingest.exceptions import MqttUnavailable, SessionClosed
from ingest.metrics import BridgeMetrics, BridgeStats
from ingest.mqtt import RETAIN_HANDLING_NONE, InboundMessage, MqttSession, Subscription
from registry import RegistryView
from wire.schemas import RejectReason
from wire.topics import DATA_CHANNEL, STATUS_CHANNEL, parse_data_topic
from wire.validate import (
    AcceptedMessage,
    EventMessage,
    RejectedMessage,
    Verdict,
    reject_message,
    validate_messages,
)

__all__ = [
    "DRAIN_TIMEOUT_S",
    "Bridge",
    "retired_filters",
    "subscriptions",
]

log = structlog.get_logger(__name__)

# Messages validated and handed to Kafka per pass before yielding to the socket readers.
RECEIVE_BATCH_MAX = 500
# How long one receive waits for a message before stop conditions are checked again.
POLL_INTERVAL_S = 0.2
# On stop, how long in-flight produces may take before they are left to MQTT redelivery.
DRAIN_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 5.0
# aiokafka's stop flushes too; with Kafka down that would wait a full request timeout.
PRODUCER_STOP_TIMEOUT_S = 5.0
TASK_CANCEL_TIMEOUT_S = 5.0
# Produce retries: quick at first (a leader moved), capped for a broker that is down.
PRODUCE_BACKOFF_MIN_S = 0.2
PRODUCE_BACKOFF_MAX_S = 5.0
STATUS_PUBLISH_TIMEOUT_S = 5.0
# Status replies in flight at once (each waits for its PUBACK, none holds an inbound slot).
STATUS_WORKERS = 8
# Replies waiting per device; beyond it the oldest waiting one is dropped (coalesced): a
# device sending garbage in a loop needs its latest reason, not thousands of them.
STATUS_QUEUE_PER_DEVICE = 8
# Devices with replies waiting; a reply for one more device beyond it is dropped (counted).
STATUS_PENDING_DEVICES_MAX = 10_000
# A device's status topic: {root}/{kind}/{network}/{site}/{device}/status.
_STATUS_TOPIC_LEVELS = 5
# Log a repeated reject (same device, same reason) or produce failure at most this often.
REPEAT_LOG_INTERVAL_S = 60.0
REPEAT_LOG_KEYS_MAX = 10_000
LOG_PAYLOAD_CHARS = 200

ROLE_READINGS = "readings"
ROLE_DEADLETTER = "deadletter"
ROLE_EVENTS = "events"


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DONE = "done"


class _ClearStatus:
    """A queued reply that removes a device's retained rejection (it sent valid data again)."""

    __slots__ = ()


_CLEAR = _ClearStatus()
_DATA_SUFFIX = "/" + DATA_CHANNEL
_Reply = RejectedMessage | _ClearStatus
# Status topics holding a rejection this bridge retained, cleared by the device's next valid
# message; past this many devices further ones are not tracked (their rejection stays).
STATUS_FLAGGED_MAX = 100_000


class _StatusBoard:
    """Status replies waiting to be published: in order per device, bounded, coalesced.

    A worker takes a device that has replies waiting and no reply in flight, publishes its
    oldest one and waits for the PUBACK; so one device's replies reach the broker in order
    while several devices' go out at once, and a flood of rejects queues at most
    ``STATUS_QUEUE_PER_DEVICE`` replies per device. The JSON is built only when a reply is
    published, so a coalesced one costs nothing.
    """

    __slots__ = ("_busy", "_flagged", "_pending", "_ready", "_wake", "coalesced", "dropped")

    def __init__(self) -> None:
        self._pending: dict[str, deque[_Reply]] = {}
        self._flagged: set[str] = set()
        self._ready: deque[str] = deque()
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self.coalesced = 0
        self.dropped = 0

    def valid(self, topic: str) -> None:
        """The device sent valid data: clear the rejection this bridge retained for it, once.

        Only rejections this bridge process published are known (a healthy device costs one
        set lookup and no publish); one retained by an earlier run or another bridge of the
        group stays until this bridge rejects and then accepts that device, or it is
        replaced by the next rejection.
        """
        if topic not in self._flagged:
            return
        self._flagged.discard(topic)
        self.put(topic, _CLEAR)

    def put(self, topic: str, result: _Reply) -> None:
        """Queue a reply for the device whose status topic is ``topic``."""
        if isinstance(result, RejectedMessage) and len(self._flagged) < STATUS_FLAGGED_MAX:
            self._flagged.add(topic)
        queue = self._pending.get(topic)
        if queue is None:
            if len(self._pending) >= STATUS_PENDING_DEVICES_MAX:
                self.dropped += 1
                return
            queue = self._pending[topic] = deque(maxlen=STATUS_QUEUE_PER_DEVICE)
            if topic not in self._busy:
                self._ready.append(topic)
                self._wake.set()
        elif len(queue) == STATUS_QUEUE_PER_DEVICE:
            self.coalesced += 1
        queue.append(result)

    async def take(self) -> tuple[str, _Reply]:
        """Wait for a device with a reply waiting and none in flight; mark it busy."""
        while not self._ready:
            self._wake.clear()
            await self._wake.wait()
        topic = self._ready.popleft()
        queue = self._pending[topic]
        result = queue.popleft()
        if not queue:
            del self._pending[topic]
        self._busy.add(topic)
        return topic, result

    def done(self, topic: str, retry: _Reply | None = None) -> None:
        """The device's reply in flight is settled; ``retry`` puts it back at the front."""
        self._busy.discard(topic)
        queue = self._pending.get(topic)
        if retry is not None:
            if queue is None:
                queue = self._pending[topic] = deque(maxlen=STATUS_QUEUE_PER_DEVICE)
            if len(queue) < STATUS_QUEUE_PER_DEVICE:
                queue.appendleft(retry)
            else:
                self.coalesced += 1
        if topic in self._pending:
            self._ready.append(topic)
            self._wake.set()


class _Job:
    """One received message on its way: the parts still to confirm before it can be acked."""

    __slots__ = ("device", "finished", "message", "pending")

    def __init__(self, message: InboundMessage, pending: int, device: str | None) -> None:
        self.message = message
        self.pending = pending
        self.device = device
        self.finished = False


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A Kafka record on its way and the job it settles."""

    job: _Job
    role: str
    record: OutgoingRecord


def _backoff_s(attempt: int) -> float:
    base = min(PRODUCE_BACKOFF_MAX_S, PRODUCE_BACKOFF_MIN_S * 2.0**attempt)
    return base * random.uniform(0.5, 1.0)


def _excerpt(payload: bytes) -> str:
    return payload[:LOG_PAYLOAD_CHARS].decode("utf-8", errors="replace")


# The shared group every bridge used by default before plain subscriptions became the default.
_FORMER_SHARE_GROUP = "ghgwatch-bridge"


def retired_filters(settings: Settings) -> list[str]:
    """Filters earlier releases subscribed with (data topics only, shared by default or plain).

    A broker that kept the bridge's session may still hold them; alongside today's filters
    each message would then come twice, so the session unsubscribes them.
    """
    root = settings.mqtt.topic_root
    data = f"{root}/+/+/+/+/{DATA_CHANNEL}"
    return [f"$share/{_FORMER_SHARE_GROUP}/{data}", data]


def subscriptions(settings: Settings) -> list[Subscription]:
    """The bridge's subscriptions: one per ``mqtt.topic_filters`` entry below the root.

    Plain by default: Mosquitto keeps a plain subscription, and what it queues for it, with
    the bridge's persistent session across a broker restart. With ``mqtt.share_group`` each
    filter is shared by the group (Mosquitto 2.0 forgets those on restart: what is published
    until the bridge re-subscribes is lost). Plain ones ask for no echo of the bridge's own
    status replies and no retained messages (MQTT v5; 3.1.1 ignores both).
    """
    cfg = settings.mqtt
    root = cfg.topic_root
    out = []
    for flt in cfg.topic_filters:
        full = f"{root}/{flt}"
        if cfg.share_group:
            out.append(Subscription(f"$share/{cfg.share_group}/{full}", cfg.qos))
        else:
            out.append(
                Subscription(full, cfg.qos, no_local=True, retain_handling=RETAIN_HANDLING_NONE)
            )
    return out


class Bridge:
    """Moves device messages from MQTT to Kafka without losing any (at-least-once).

    Args:
        settings: the frozen settings; sections ``mqtt``, ``kafka`` and ``metrics`` are used.

    Attributes:
        metrics: the live counters (also served to Prometheus when ``metrics.enabled``).
        metrics_port: the port the metrics endpoint listens on while running, if enabled.

    A bridge runs once; build a new one to run again.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._root = settings.mqtt.topic_root
        self._readings_topic = settings.kafka.readings_topic
        self._deadletter_topic = settings.kafka.deadletter_topic
        self._events_topic = settings.kafka.events_topic
        self._topics = [self._readings_topic, self._deadletter_topic, self._events_topic]
        self.metrics = BridgeMetrics()
        self.metrics.refresh = self._sync_session_counters
        self.metrics_port: int | None = None
        self._state = _State.NEW
        self._stop = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._capacity = asyncio.Event()
        self._retry_queue: deque[_Outgoing] = deque()
        self._retry_ready = asyncio.Event()
        self._retry_attempt = 0
        self._started = asyncio.Event()
        self._max_in_flight = settings.mqtt.receive_maximum
        self._status = _StatusBoard()
        # Topics ghgwatch publishes on itself below the root: never device input.
        alerts_root = settings.alerts.mqtt_topic_root.rstrip("/") + "/"
        self._own_prefixes = (alerts_root,) if alerts_root.startswith(self._root + "/") else ()
        self._jobs: set[_Job] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fatal: GhgwatchError | None = None
        self._log_limit = RepeatLimiter(REPEAT_LOG_INTERVAL_S, REPEAT_LOG_KEYS_MAX)
        self._producer: RecordProducer | None = None
        self._session: MqttSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # ingest.require_registration: a cached registry view, no database trip per message
        self._registry = (
            RegistryView(settings.db_url(), settings.ingest.registry_refresh_s)
            if settings.ingest.require_registration
            else None
        )

    def stats(self) -> BridgeStats:
        """What the bridge has done so far (safe to call while it runs)."""
        return self.metrics.snapshot()

    @property
    def connected(self) -> bool:
        """True while the MQTT session is connected and subscribed."""
        return self._session is not None and self._session.connected

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until :meth:`run` has Kafka ready and MQTT connected and subscribed.

        Raises:
            CredentialsRefused: the MQTT broker refused us.
            MqttUnavailable: not connected within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._started.wait()
        except TimeoutError as exc:
            raise MqttUnavailable(f"bridge not started within {timeout_s} s") from exc
        session = self._session
        if session is None:
            raise SessionClosed("the bridge stopped before it connected")
        await session.wait_connected(timeout_s)

    async def run(
        self,
        stop: asyncio.Event | None = None,
        *,
        max_messages: int | None = None,
        timeout_s: float | None = None,
    ) -> BridgeStats:
        """Bridge messages until ``stop`` is set, ``timeout_s`` passes or ``max_messages`` came.

        Args:
            stop: set it to stop gracefully (the CLI's SIGINT/SIGTERM handlers do).
            max_messages: stop after taking this many MQTT messages.
            timeout_s: stop after this many seconds.

        Returns:
            The final counters.

        Raises:
            CredentialsRefused: the MQTT broker refused the bridge's login or subscription.
            FatalError: Kafka refused us for good (authorisation, configuration).
            SessionClosed: this bridge already ran.
        """
        if self._state is not _State.NEW:
            raise SessionClosed("a Bridge runs once; build a new one")
        self._state = _State.RUNNING
        self._loop = loop = asyncio.get_running_loop()
        if stop is not None:
            self._stop = stop
        deadline = None if timeout_s is None else loop.time() + timeout_s
        try:
            async with AsyncExitStack() as stack:
                cfg = self._settings
                if cfg.metrics.enabled:
                    server = MetricsServer(
                        self.metrics.registry, cfg.metrics.host, cfg.metrics.bridge_port
                    )
                    stack.callback(server.close)
                    self.metrics_port = server.port
                producer = await self._start_producer(deadline)
                if producer is None:
                    return self.stats()
                stack.push_async_callback(producer.stop, PRODUCER_STOP_TIMEOUT_S)
                if self._registry is not None:
                    # no message is read before the bridge knows who is registered
                    await self._registry.start(cfg.ingest.registry_start_timeout_s)
                    stack.push_async_callback(self._registry.close)
                session = MqttSession(
                    cfg.mqtt,
                    cfg.mqtt_url(),
                    subscriptions=subscriptions(cfg),
                    retired_filters=retired_filters(cfg),
                    on_connected=self._count_connect,
                )
                await session.open()
                stack.push_async_callback(session.close)
                self._producer, self._session = producer, session
                self._started.set()
                self._spawn(self._retry_loop(), "produce-retry")
                for n in range(STATUS_WORKERS):
                    self._spawn(self._status_worker(session), f"status-publish-{n}")
                log.info(
                    "bridge running",
                    mqtt=cfg.mqtt_url(),
                    client_id=cfg.mqtt.client_id,
                    kafka=cfg.kafka_bootstrap(),
                    readings_topic=self._readings_topic,
                )
                try:
                    await self._pump(session, deadline, max_messages)
                finally:
                    await self._drain(session, producer)
            if self._fatal is not None:
                raise self._fatal
        finally:
            self._state = _State.DONE
            self._started.set()
        stats = self.stats()
        log.info(
            "bridge stopped",
            received=stats.received,
            accepted=stats.accepted,
            rejected=stats.rejected_total,
            acked=stats.acked,
            dropped=stats.dropped_total,
        )
        return stats

    def _count_connect(self) -> None:
        self.metrics.mqtt_connects += 1

    def _sync_session_counters(self) -> None:
        session, metrics = self._session, self.metrics
        if session is not None:
            metrics.redeliveries_skipped = session.redeliveries_skipped
        metrics.status_coalesced = self._status.coalesced + self._status.dropped

    # -- start-up ----------------------------------------------------------------------------

    def _halted(self, deadline: float | None) -> bool:
        assert self._loop is not None
        return (
            self._stop.is_set()
            or self._fatal is not None
            or (deadline is not None and self._loop.time() >= deadline)
        )

    async def _pause(self, delay_s: float) -> None:
        """Sleep ``delay_s``, waking early when a stop is requested."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop.wait()

    async def _start_producer(self, deadline: float | None) -> RecordProducer | None:
        kafka, bootstrap = self._settings.kafka, self._settings.kafka_bootstrap()
        attempt = 0
        while True:
            try:
                await ensure_topics(kafka, bootstrap, self._topics)
                producer = RecordProducer(kafka, bootstrap)
                await producer.start()
            except BrokerUnavailable as exc:
                log.warning("kafka not reachable; retrying", error=str(exc), attempt=attempt)
                if self._halted(deadline):
                    return None
                await self._pause(_backoff_s(attempt))
                attempt += 1
                continue
            return producer

    # -- the main loop -----------------------------------------------------------------------

    async def _pump(
        self, session: MqttSession, deadline: float | None, max_messages: int | None
    ) -> None:
        assert self._loop is not None
        metrics = self.metrics
        taken = 0
        while not self._halted(deadline):
            if session.failure is not None:
                raise session.failure
            wait_s = POLL_INTERVAL_S
            if deadline is not None:
                wait_s = max(0.0, min(wait_s, deadline - self._loop.time()))
            room = self._max_in_flight - metrics.in_flight
            if room <= 0:
                # ReceiveMaximum messages unconfirmed: a compliant broker sends no more anyway,
                # and one that ignores the limit (Mosquitto replaying a backlog) now finds the
                # session's buffer full and its socket unread until Kafka confirms some.
                self._capacity.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._capacity.wait()
                continue
            want = min(RECEIVE_BATCH_MAX, room)
            if max_messages is not None:
                want = min(want, max_messages - taken)
            batch = await session.receive(want, wait_s)
            if not batch:
                continue
            taken += len(batch)
            metrics.received += len(batch)
            metrics.in_flight += len(batch)
            batch = self._skip_own(batch)
            verdicts = validate_messages(
                [(m.topic, m.payload, m.received_at) for m in batch], root=self._root
            )
            if self._registry is not None:
                verdicts = self._admit(self._registry, batch, verdicts)
            outgoing = [self._handle(m, v) for m, v in zip(batch, verdicts, strict=True)]
            if outgoing:
                await self._produce(outgoing)
            if max_messages is not None and taken >= max_messages:
                return
            # Let the MQTT socket reader and the Kafka sender run between batches.
            await asyncio.sleep(0)

    def _admit(
        self,
        registry: RegistryView,
        batch: list[InboundMessage],
        verdicts: list[Verdict],
    ) -> list[Verdict]:
        """Accepted messages (and last wills) of devices not registered and enabled become
        ``unregistered``."""
        out: list[Verdict] = []
        for message, verdict in zip(batch, verdicts, strict=True):
            if isinstance(verdict, AcceptedMessage | EventMessage):
                device = parse_data_topic(message.topic, self._root)
                why = None if device is None else registry.refusal(device.device_id, device.kind)
                if device is not None and why is not None:
                    out.append(reject_message(
                        message.topic, message.payload, message.received_at, device,
                        RejectReason.UNREGISTERED, why,
                    ))  # fmt: skip
                    continue
            out.append(verdict)
        return out

    def _skip_own(self, batch: list[InboundMessage]) -> list[InboundMessage]:
        """Settle what ghgwatch itself published (status replies, alerts); keep the rest.

        A subscription to the whole root also matches the bridge's own status replies (MQTT
        3.1.1 has no "no local"; retained ones come on subscribe) and the alert topics.
        """
        keep = [m for m in batch if not self._is_own(m.topic)]
        if len(keep) != len(batch):
            for message in batch:
                if self._is_own(message.topic):
                    self.metrics.ignored += 1
                    self._settle(self._track(message, 1, None))
        return keep

    def _is_own(self, topic: str) -> bool:
        if topic.endswith("/" + STATUS_CHANNEL) and topic.startswith(self._root + "/"):
            return topic.count("/", len(self._root) + 1) == _STATUS_TOPIC_LEVELS - 1
        return bool(self._own_prefixes) and topic.startswith(self._own_prefixes)

    def _track(self, message: InboundMessage, pending: int, device: str | None) -> _Job:
        job = _Job(message, pending, device)
        self._jobs.add(job)
        return job

    def _handle(self, message: InboundMessage, result: Verdict) -> _Outgoing:
        """Build a validated message's Kafka record (a reject also starts its status)."""
        if isinstance(result, AcceptedMessage):
            self.metrics.accepted += 1
            if message.topic.endswith(_DATA_SUFFIX):
                self._status.valid(message.topic.removesuffix(DATA_CHANNEL) + STATUS_CHANNEL)
            job = self._track(message, 1, result.device_id)
            return _Outgoing(
                job,
                ROLE_READINGS,
                (self._readings_topic, result.device_id.encode(), result.value),
            )
        if isinstance(result, EventMessage):
            log.info("device last will", device=result.device_id, topic=message.topic)
            job = self._track(message, 1, result.device_id)
            return _Outgoing(
                job, ROLE_EVENTS, (self._events_topic, result.device_id.encode(), result.value)
            )
        return self._reject(message, result)

    def _reject(self, message: InboundMessage, result: RejectedMessage) -> _Outgoing:
        record = result.record
        reason = record.reason.value
        self.metrics.count_rejected(reason)
        device = result.device
        device_id = device.device_id if device is not None else None
        if self._log_limit.allow(device_id or message.topic, reason):
            log.warning(
                "message rejected",
                device=device_id,
                topic=message.topic,
                reason=reason,
                detail=record.detail,
                payload=_excerpt(message.payload),
            )
        job = self._track(message, 1, device_id)
        if device is not None:
            self._status.put(device.status_topic(self._root), result)
        key = device_id.encode() if device_id is not None else None
        value = record.model_dump_json().encode()
        return _Outgoing(job, ROLE_DEADLETTER, (self._deadletter_topic, key, value))

    # -- producing ---------------------------------------------------------------------------

    async def _produce(self, outgoing: list[_Outgoing]) -> None:
        """Hand records to the producer; what cannot be sent goes to the retry loop.

        Records go in one batch per partition; each batch's delivery settles its messages
        when Kafka confirms it. A failed hand-over does not hold the pump: the records wait
        in the retry queue (bounded: each holds one of at most receive_maximum in-flight
        messages), and the pump goes on taking messages until that window is full.
        """
        producer = self._producer
        assert producer is not None
        if producer.abandoned and not await self._reconnect_producer():
            self._requeue(outgoing)
            return
        sent, error = await producer.send_grouped([o.record for o in outgoing])
        handed: set[int] = set()
        for future, members in sent:
            items = [outgoing[i] for i in members]
            future.add_done_callback(functools.partial(self._on_delivered, items))
            handed.update(members)
        if error is None:
            return
        pending = [o for i, o in enumerate(outgoing) if i not in handed]
        if isinstance(error, FatalError):
            self._fail(error)
            for item in pending:
                self._abandon(item.job, "kafka refused the record")
            return
        self._produce_failed(error, pending[0].record[0])
        self._requeue(pending)

    def _requeue(self, items: list[_Outgoing]) -> None:
        if self._stopping or self._stop.is_set() or self._fatal is not None:
            for item in items:
                self._abandon(item.job, "kafka unavailable at stop")
            return
        self._retry_queue.extend(items)
        self._retry_ready.set()

    def _on_delivered(self, items: list[_Outgoing], future: asyncio.Future[Any]) -> None:
        exc = delivery_error(future)
        if exc is None:
            self._retry_attempt = 0
            for item in items:
                self.metrics.count_produced(item.role)
                self._settle(item.job)
            return
        if isinstance(exc, FatalError):
            self._fail(exc)
            for item in items:
                self._abandon(item.job, "kafka refused the record")
            return
        self._produce_failed(exc, items[0].record[0])
        self._requeue(items)

    async def _retry_loop(self) -> None:
        """The one task re-sending failed deliveries, all together, after a growing backoff.

        One sender rather than a task per record: when Kafka comes back it gets one batch of
        retries in arrival order, not a stampede of competing requests.
        """
        while True:
            await self._retry_ready.wait()
            await asyncio.sleep(_backoff_s(self._retry_attempt))
            self._retry_attempt += 1
            batch = list(self._retry_queue)
            self._retry_queue.clear()
            self._retry_ready.clear()
            await self._produce(batch)

    async def _reconnect_producer(self) -> bool:
        """After a failed produce, make sure our topics exist before producing again, then
        produce through a fresh connection.

        A broker that came back empty (tansu keeps topics in memory; a rebuilt cluster)
        confirms a write to a topic it no longer has and loses it when the topic is created
        (issue 9 finding 10: all 300 acked, some of the retried window gone). So at the first
        failure the producer gave up what it still held (:meth:`_produce_failed`), and
        nothing is produced again until the topics exist, as at start.

        Returns:
            True when the topics are known to exist and the producer is connected.
        """
        producer = self._producer
        assert producer is not None
        try:
            await producer.reconnect(self._topics)
        except BrokerUnavailable:
            return False
        return True

    def _produce_failed(self, exc: GhgwatchError, topic: str) -> None:
        if self._producer is not None:
            # every batch still queued fails now and comes back through the retry queue
            self._producer.abandon("kafka unavailable; re-sent after the topics are checked")
        self.metrics.produce_errors += 1
        if self._log_limit.allow("kafka", topic):
            log.warning(
                "kafka produce failed; retrying, messages stay unacknowledged",
                topic=topic,
                error=str(exc),
                in_flight=self.metrics.in_flight,
            )

    # -- telling the device --------------------------------------------------------------------

    async def _status_worker(self, session: MqttSession) -> None:
        """Publish queued status replies (retained, QoS 1) until the bridge stops."""
        board = self._status
        while True:
            topic, result = await board.take()
            retry: _Reply | None = None
            try:
                # An empty retained message removes the retained rejection (MQTT 3.3.1.3).
                cleared = isinstance(result, _ClearStatus)
                payload = (
                    result.status().model_dump_json().encode()
                    if isinstance(result, RejectedMessage)
                    else b""
                )
                await session.publish(
                    topic, payload, qos=1, retain=True, timeout_s=STATUS_PUBLISH_TIMEOUT_S
                )
            except MqttUnavailable as exc:
                if self._log_limit.allow("status", topic):
                    log.warning("status publish failed; retrying", topic=topic, error=str(exc))
                retry = result
            else:
                self.metrics.status_published += not cleared
            finally:
                board.done(topic, retry)
            if retry is not None:
                await self._pause(_backoff_s(0))

    # -- settling --------------------------------------------------------------------------------

    def _settle(self, job: _Job) -> None:
        """One part of the job is confirmed; when all are, acknowledge the message."""
        job.pending -= 1
        if job.pending > 0 or job.finished:
            return
        self._finish(job)
        message = job.message
        session = self._session
        assert session is not None
        assert self._loop is not None
        if session.ack(message):
            self.metrics.acked += 1
            self.metrics.observe_ack_latency(self._loop.time() - message.received_mono)

    def _abandon(self, job: _Job, why: str) -> None:
        """Give up on a message without acknowledging it (QoS 1: the broker redelivers it)."""
        if job.finished:
            return
        self._finish(job)
        if job.message.qos == 0:
            self.metrics.count_dropped(why)
            log.error(
                "message dropped (QoS 0 cannot be redelivered)",
                device=job.device,
                topic=job.message.topic,
                reason=why,
            )

    def _finish(self, job: _Job) -> None:
        job.finished = True
        self._jobs.discard(job)
        in_flight = self.metrics.in_flight = self.metrics.in_flight - 1
        if in_flight == 0:
            self._idle.set()
        if in_flight < self._max_in_flight:
            self._capacity.set()

    def _fail(self, exc: GhgwatchError) -> None:
        if self._fatal is None:
            log.error("bridge failing", error=str(exc))
            self._fatal = exc

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("bridge task failed", task=task.get_name(), error=repr(exc))
            if isinstance(exc, GhgwatchError):
                self._fail(exc)
            else:
                self._fail(FatalError(f"bridge task {task.get_name()} failed: {exc!r}"))

    # -- stopping ----------------------------------------------------------------------------

    async def _drain(self, session: MqttSession, producer: RecordProducer) -> None:
        """Stop reading, let in-flight produces finish (bounded), ack them, flush."""
        self._stopping = True
        # Messages taken from the broker but not handled: QoS 1 ones come back on reconnect.
        leftovers = await session.receive(session.in_flight + RECEIVE_BATCH_MAX, 0)
        self.metrics.received += len(leftovers)
        self.metrics.in_flight += len(leftovers)
        for message in leftovers:
            self._abandon(self._track(message, 1, None), "stopped before handling")
        drained = True
        if self.metrics.in_flight > 0:
            self._idle.clear()
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await self._idle.wait()
            except TimeoutError:
                drained = False
        if drained:
            # Nothing of ours is pending; flush whatever the producer still holds.
            try:
                await producer.flush(FLUSH_TIMEOUT_S)
            except GhgwatchError as exc:
                log.warning("kafka flush at stop failed", error=str(exc))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TASK_CANCEL_TIMEOUT_S):
                    await asyncio.gather(*tasks, return_exceptions=True)
        for job in list(self._jobs):
            self._abandon(job, "still in flight at stop")
        unacked = session.in_flight
        if unacked:
            log.warning(
                "stopping with unacknowledged messages; the broker will redeliver them",
                unacknowledged=unacked,
            )
