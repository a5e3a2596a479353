"""MQTT session adapter: persistent session, manual in-order acks, resubscribe and reconnect.

The only module that imports ``aiomqtt`` / ``paho``; their errors are mapped onto
:mod:`core.errors` by :func:`mqtt_errors` and nowhere else.

How the session keeps QoS 1 readings safe:

1. It connects with MQTT v5, a fixed client id, ``clean_start=False`` and a
   ``SessionExpiryInterval``, so the broker keeps the session and its queued messages while
   the bridge is down.
2. ``ReceiveMaximum`` caps the unacknowledged messages the broker sends us. The socket is
   read on past it, so acknowledgements of our own publishes, PINGRESP and SUBACK are never
   stuck behind PUBLISH packets; only a broker that overruns the limit
   ``BUFFER_CEILING_FACTOR``-fold (Mosquitto 2.0 does after a reconnect) makes reading
   pause, and TCP holds it back.
3. Acknowledgement is manual: :meth:`MqttSession.ack` marks a message settled, and PUBACKs go
   out for the settled prefix of the in-flight window, in arrival order as MQTT requires.
4. Every connect re-subscribes the whole local registry (without waiting for the SUBACK when
   the broker kept our session and its plain subscriptions: its backlog comes first); a lost
   connection is re-established by one named task with capped, jittered exponential backoff.
   Messages of a lost connection are never acknowledged on a later one (the broker
   redelivers them); a redelivery (DUP) of one already handled is acknowledged in its turn
   and not handed over again.
5. Refused credentials or authorisation end the session with :class:`CredentialsRefused`.

With ``mqtt.protocol = "3.1.1"`` (brokers without v5, such as amqtt) the session connects
with MQTT 3.1.1, the same fixed client id and ``clean_session=False``: the broker keeps the
session (for as long as it keeps sessions at all; 3.1.1 has no expiry interval) and queues
QoS 1 messages while the bridge is down. No v5 properties are sent, so there is no
ReceiveMaximum and the broker alone decides how many messages it has in flight to us; what
bounds the bridge's memory is step 2's second half: reading pauses while the buffer holds
``mqtt.receive_maximum`` messages, and TCP holds the rest back at the broker. Manual, in-order
acknowledgement is unchanged. 3.1.1 has no shared subscriptions: keep ``mqtt.share_group``
``""`` (the default, plain subscriptions; bridges split the load by ``mqtt.topic_filters``).

For throughput (15,000+ messages/s) the socket is read in large chunks and PUBLISH packets
are decoded straight into the buffer, bypassing paho's per-message objects (see
:class:`_BurstReader`); everything else (CONNECT, SUBSCRIBE, PUBACK out, keepalive) is paho's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import ssl
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.errors import ConfigurationError, FatalError, GhgwatchError
from core.settings import MqttSettings
from ingest.exceptions import CredentialsRefused, MqttUnavailable, SessionClosed

__all__ = [
    "DISCONNECT_TIMEOUT_S",
    "InboundMessage",
    "MqttSession",
    "Subscription",
    "mqtt_errors",
]

log = structlog.get_logger(__name__)

# Graceful DISCONNECT (after the final PUBACKs) must not hold up a stop for long.
DISCONNECT_TIMEOUT_S = 5.0
# Outer bound of one connect attempt: TCP connect and CONNACK are each bounded by
# connect_timeout_s inside paho/aiomqtt; this catches anything that slips past both.
_CONNECT_PHASES = 2
_CONNECT_SLACK_S = 1.0
# The socket is read on past ReceiveMaximum: PUBACKs of our own publishes, PINGRESP and
# SUBACK queue behind PUBLISH packets, and a bridge that stops reading at the window's edge
# stops hearing them (issue 9: keepalive timeouts, subscribes timing out behind a backlog).
# A compliant broker never sends more than ReceiveMaximum unacknowledged messages, so only a
# broker that ignores the limit (Mosquitto 2.0 does after a reconnect and after acks: 540 and
# more in flight measured with a limit of 50) fills the buffer beyond it. Only then, at this
# many times the window or BUFFER_BYTES_MAX, reading pauses and TCP holds the broker back.
BUFFER_CEILING_FACTOR = 4
BUFFER_BYTES_MAX = 64 * 1024 * 1024
# Reading resumes once the buffer has drained to this fraction of its ceiling.
RESUME_READING_FRACTION = 0.5
# Messages PUBACKed (or settled after their connection was lost) that the broker may send
# again with the DUP flag after a reconnect, remembered per window size to skip re-producing
# them: Kafka then holds each once across a broker restart.
REDELIVERY_MEMORY_FACTOR = 2
# MQTT v5 subscription option "retain handling": 2 = send no retained messages on subscribe.
RETAIN_HANDLING_NONE = 2
MQTT_RETRY_AFTER_S = 1.0
# A connection that lasted this long resets the reconnect backoff to its minimum.
STABLE_CONNECTION_S = 10.0
# Socket reads in chunks this big (paho alone reads each packet in 3-4 tiny recv calls).
RECV_CHUNK_BYTES = 256 * 1024
# Packets handled per wake-up before yielding to other tasks for a turn.
READ_BURST_PACKETS_MAX = 4096
# Hard ceiling above the buffer's capacity (control packets read after the pause point).
READ_BURST_SLACK_MESSAGES = 16
# How often a waiter for the first connection re-checks for a fatal refusal.
_STATE_POLL_S = 0.05

# CONNACK / SUBACK reason codes that retrying cannot fix (MQTT 5 and 3.1.1 numbering).
_REFUSED_V5 = {
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8A: "banned",
    0x8C: "bad authentication method",
}
_REFUSED_V3 = {2: "identifier rejected", 4: "bad user name or password", 5: "not authorised"}
_SUBSCRIBE_FATAL = {
    0x87: "not authorized",
    0x8F: "topic filter invalid",
    0x9E: "shared subscriptions not supported",
    0xA2: "wildcard subscriptions not supported",
}
_SUBACK_FAILURE = 0x80


def _code(rc: Any) -> int | None:
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


@contextlib.contextmanager
def mqtt_errors(action: str) -> Iterator[None]:
    """Translate aiomqtt, paho and socket errors raised inside the block onto ghgwatch's tree.

    Args:
        action: what was being done, for the message (e.g. ``"connect"``).

    Raises:
        CredentialsRefused: the broker refused our credentials or authorisation.
        MqttUnavailable: the broker cannot be reached, timed out or dropped us (reconnect).
    """
    try:
        yield
    except GhgwatchError:
        raise
    except MqttConnectError as exc:
        code = _code(exc.rc)
        refused = _REFUSED_V5.get(code) or _REFUSED_V3.get(code) if code is not None else None
        if refused is not None:
            raise CredentialsRefused(f"mqtt {action}: broker refused us: {refused}") from exc
        raise MqttUnavailable(f"mqtt {action}: {exc}", retry_after=MQTT_RETRY_AFTER_S) from exc
    except (aiomqtt.MqttError, paho.WebsocketConnectionError, OSError, TimeoutError) as exc:
        raise MqttUnavailable(
            f"mqtt {action}: {type(exc).__name__}: {exc}", retry_after=MQTT_RETRY_AFTER_S
        ) from exc


@dataclass(frozen=True, slots=True)
class Subscription:
    """One entry of the session's subscription registry (re-subscribed on every connect)."""

    topic_filter: str
    qos: int = 1
    no_local: bool = False
    """MQTT v5: do not send us what we publish ourselves (not allowed on shared ones)."""
    retain_handling: int = 0
    """MQTT v5: 0 sends retained messages on subscribe, 2 sends none."""


@dataclass(slots=True, eq=False)
class InboundMessage:
    """One message as received; hand it back to :meth:`MqttSession.ack` once durably handled.

    Attributes:
        topic: the topic it was published on.
        payload: the raw payload.
        qos: the delivery QoS (1 means the broker redelivers it until acknowledged).
        mid: the packet id on the connection it arrived on.
        received_at: when it arrived (timezone-aware UTC).
        received_mono: the event loop's clock at arrival, for latency.
        generation: which connection it arrived on; acks never cross connections.
        settled: set by :meth:`MqttSession.ack`; the PUBACK waits for earlier messages.
    """

    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at: datetime
    received_mono: float
    generation: int
    settled: bool = field(default=False, repr=False)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def _parse_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"} or not parts.hostname:
        raise ConfigurationError(f"mqtt url must look like mqtt://host:port, got {url!r}")
    tls = parts.scheme in {"mqtts", "ssl"}
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ConfigurationError(f"mqtt url has a bad port: {url!r}") from exc
    return parts.hostname, port, tls


class MqttSession:
    """A long-lived MQTT v5 (or 3.1.1) session that survives broker restarts and bridge crashes.

    Use as ``async with MqttSession(cfg, url, subscriptions=[...]) as session:``; then
    :meth:`receive` batches of messages, :meth:`ack` each once durably handled, and
    :meth:`publish` replies. A closed session cannot be reopened.
    """

    def __init__(
        self,
        cfg: MqttSettings,
        url: str,
        *,
        subscriptions: Sequence[Subscription] = (),
        retired_filters: Sequence[str] = (),
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        """Prepare the session; nothing connects before :meth:`open`.

        Args:
            cfg: the ``mqtt`` settings section (protocol, client id, session expiry,
                ReceiveMaximum...).
            url: ``mqtt://host:port`` or ``mqtts://host:port``.
            subscriptions: the initial registry, subscribed on every connect.
            retired_filters: filters an earlier release subscribed with; a session the broker
                kept may still hold them (then each message would come twice), so they are
                unsubscribed whenever the session was kept.
            on_connected: called after each successful connect and resubscribe.

        Raises:
            ConfigurationError: the URL is malformed.
        """
        self._on_connected = on_connected
        self._cfg = cfg
        self._host, self._port, self._tls = _parse_url(url)
        self._subscriptions: dict[str, Subscription] = {s.topic_filter: s for s in subscriptions}
        self._retired = [f for f in retired_filters if f not in self._subscriptions]
        self._state = _State.NEW
        self._buffer: deque[InboundMessage] = deque()
        self._buffer_bytes = 0
        self._buffer_cap = cfg.receive_maximum * BUFFER_CEILING_FACTOR
        self._resume_below = max(1, int(self._buffer_cap * RESUME_READING_FRACTION))
        # (topic, payload) of messages handled but possibly unacknowledged at the broker.
        self._recent: deque[InboundMessage] = deque(
            maxlen=cfg.receive_maximum * REDELIVERY_MEMORY_FACTOR
        )
        self._handled: dict[tuple[str, bytes], int] = {}
        self._handled_max = cfg.receive_maximum * REDELIVERY_MEMORY_FACTOR * 2
        self._session_present = False
        self._reader: _BurstReader | None = None
        self._window: deque[InboundMessage] = deque()
        self._ready = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._paho: paho.Client | None = None
        self._generation = 0
        self._failure: GhgwatchError | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connects = 0
        self.overflowed = 0
        self._redeliver = asyncio.Event()
        self.redeliveries_skipped = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> MqttSession:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Start the connection task (it connects, subscribes and reconnects by itself).

        Raises:
            SessionClosed: the session was opened before.
        """
        if self._state is not _State.NEW:
            raise SessionClosed("an MQTT session can be opened only once")
        self._state = _State.OPEN
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._connection_loop(), name="mqtt-connection")

    async def close(self, timeout_s: float = DISCONNECT_TIMEOUT_S) -> None:
        """Disconnect gracefully (PUBACKs already queued go out first) and stop reconnecting."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._closing.set()
        self._ready.set()
        task = self._task
        if task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("mqtt session did not close in time; dropping the connection")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, GhgwatchError):
                await task
        except GhgwatchError:
            pass

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is up and subscribed."""
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        """Number of the current connection; bumps on every connect and every loss."""
        return self._generation

    @property
    def in_flight(self) -> int:
        """QoS 1 messages of the current connection not yet acknowledged."""
        return len(self._window)

    @property
    def failure(self) -> GhgwatchError | None:
        """The fatal error that ended the session, if any."""
        return self._failure

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the session is connected and subscribed.

        Raises:
            CredentialsRefused: the broker refused us.
            MqttUnavailable: not connected within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while not self._connected.is_set():
                    self._raise_failure()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_STATE_POLL_S):
                            await self._connected.wait()
        except TimeoutError as exc:
            self._raise_failure()
            raise MqttUnavailable(f"mqtt: not connected within {timeout_s} s") from exc
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # -- subscriptions ----------------------------------------------------------------------

    async def subscribe(self, subscription: Subscription) -> None:
        """Add to the registry (kept across reconnects) and subscribe now if connected.

        Raises:
            MqttUnavailable: connected, but the broker did not confirm in time.
            CredentialsRefused: the broker refused the subscription.
        """
        self._subscriptions[subscription.topic_filter] = subscription
        client = self._client
        if client is not None and self._connected.is_set():
            await self._subscribe(client, [subscription])

    async def _subscribe(self, client: aiomqtt.Client, subs: Sequence[Subscription]) -> None:
        v5 = self._cfg.protocol == "5"
        for sub in subs:
            options = (
                SubscribeOptions(
                    qos=sub.qos, noLocal=sub.no_local, retainHandling=sub.retain_handling
                )
                if v5
                else None
            )
            with mqtt_errors("subscribe"):
                async with asyncio.timeout(self._cfg.connect_timeout_s):
                    granted = await client.subscribe(
                        sub.topic_filter,
                        qos=0 if options is not None else sub.qos,
                        options=options,
                        timeout=self._cfg.connect_timeout_s,
                    )
            for rc in granted:
                code = _code(rc)
                if code is not None and code >= _SUBACK_FAILURE:
                    why = _SUBSCRIBE_FATAL.get(code)
                    if why is not None:
                        raise CredentialsRefused(
                            f"mqtt subscribe {sub.topic_filter!r} refused: {why}"
                        )
                    raise MqttUnavailable(f"mqtt subscribe {sub.topic_filter!r} failed: {rc}")

    # -- receiving and acknowledging ----------------------------------------------------------

    async def receive(self, max_messages: int, timeout_s: float) -> list[InboundMessage]:
        """Take up to ``max_messages`` received messages, waiting up to ``timeout_s`` for one.

        Returns:
            The messages in arrival order; empty when none came in time or the session closed.

        Raises:
            CredentialsRefused: the session ended because the broker refused us.
        """
        buffer = self._buffer
        if not buffer:
            self._raise_failure()
            if self._closing.is_set():
                return []
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._ready.wait()
        self._raise_failure()
        count = min(len(buffer), max_messages)
        taken = [buffer.popleft() for _ in range(count)]
        self._buffer_bytes -= sum(len(m.payload) for m in taken)
        reader = self._reader
        if (
            reader is not None
            and reader.paused
            and len(buffer) < self._resume_below
            and self._buffer_bytes < BUFFER_BYTES_MAX * RESUME_READING_FRACTION
        ):
            reader.resume()
        return taken

    def _buffer_full(self) -> bool:
        return len(self._buffer) >= self._buffer_cap or self._buffer_bytes >= BUFFER_BYTES_MAX

    def ack(self, message: InboundMessage) -> bool:
        """Mark ``message`` durably handled; PUBACK the settled prefix of the window in order.

        Returns:
            False when the message arrived on an earlier connection: no ack is possible and
            the broker will redeliver it.
        """
        message.settled = True
        if message.qos == 0:
            return True
        if message.generation != self._generation:
            # Handled, but its connection is gone: the broker sends it again (with DUP set).
            self._remember(message)
            return False
        self._ack_prefix()
        return True

    def _ack_prefix(self) -> None:
        window = self._window
        client = self._paho
        recent = self._recent
        while window and window[0].settled:
            head = window.popleft()
            if client is not None:
                client.ack(head.mid, head.qos)
            # The PUBACK may die with the connection (a broker restart): keep it in mind.
            recent.append(head)

    def _remember(self, message: InboundMessage) -> None:
        """Note a handled message the broker may redeliver, so the copy is only acked."""
        key = (message.topic, message.payload)
        handled = self._handled
        handled[key] = handled.get(key, 0) + 1
        if len(handled) > self._handled_max:
            del handled[next(iter(handled))]  # the oldest: its redelivery is long overdue

    def _skip_redelivery(self, topic: str, payload: bytes) -> bool:
        key = (topic, payload)
        count = self._handled.get(key)
        if not count:
            return False
        if count == 1:
            del self._handled[key]
        else:
            self._handled[key] = count - 1
        return True

    def _on_paho_message(self, client: paho.Client, _userdata: Any, message: Any) -> None:
        # paho's own path (QoS 2 only; see _BurstReader). Runs on the event loop thread.
        if client is not self._paho:
            return  # a stale client of a failed connect attempt: never ours to ack
        topic = bytes(message._topic)  # noqa: SLF001
        self._accept(topic, message.payload, message.qos, message.mid, message.dup)

    def _accept(self, topic_raw: bytes, payload: bytes, qos: int, mid: int, dup: bool) -> None:
        """Take one PUBLISH into the buffer (and the ack window for QoS > 0).

        A redelivery (DUP) of a message already handled on a lost connection is acknowledged
        in its turn without being handed over again, so Kafka gets it once.

        Runs inside paho's read on the event loop thread; it must never raise into paho,
        which would drop the connection and cause a redelivery loop.
        """
        try:
            topic = topic_raw.decode("utf-8", errors="replace")
            assert self._loop is not None
            if dup and qos and self._handled and self._skip_redelivery(topic, payload):
                skipped = InboundMessage(
                    topic, payload, qos, mid, datetime.now(UTC), self._loop.time(),
                    self._generation, settled=True,
                )  # fmt: skip
                self._window.append(skipped)
                self._ack_prefix()
                self.redeliveries_skipped += 1
                return
            if len(self._buffer) >= self._buffer_cap + READ_BURST_SLACK_MESSAGES:
                # Cannot happen while the reader pauses at the cap; kept as a hard bound. The
                # message stays unacknowledged, but a broker resends it only on a new
                # connection: drop this one (the session is kept) so it comes back. A QoS 0
                # message is gone either way.
                self.overflowed += 1
                log.warning(
                    "mqtt buffer full; message not taken",
                    topic=topic,
                    qos=qos,
                    overflowed=self.overflowed,
                )
                if qos:
                    self._reconnect_for_redelivery()
                return
            msg = InboundMessage(
                topic,
                payload,
                qos,
                mid,
                datetime.now(UTC),
                self._loop.time(),
                self._generation,
            )
            if qos > 0:
                self._window.append(msg)
            self._buffer.append(msg)
            self._buffer_bytes += len(payload)
            self._ready.set()
        except Exception:
            log.exception("mqtt message callback failed")

    # -- publishing ---------------------------------------------------------------------------

    def _reconnect_for_redelivery(self) -> None:
        """Ask the connection task to end this connection (the session is kept), so the
        broker sends what was not taken again. Also during connect: a redelivered backlog
        arrives right behind CONNACK."""
        self._redeliver.set()

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float
    ) -> None:
        """Publish and wait (bounded) until the broker has it (PUBACK for QoS 1).

        Raises:
            MqttUnavailable: not connected, or no PUBACK within ``timeout_s``.
        """
        client = self._client
        if client is None or not self._connected.is_set():
            raise MqttUnavailable("mqtt publish: not connected", retry_after=MQTT_RETRY_AFTER_S)
        with mqtt_errors("publish"):
            async with asyncio.timeout(timeout_s):
                await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout_s)

    # -- the connection task -----------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        cfg = self._cfg
        v5 = cfg.protocol == "5"
        props: Properties | None = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = cfg.session_expiry_s
            props.ReceiveMaximum = cfg.receive_maximum
        client = aiomqtt.Client(
            self._host,
            self._port,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password is not None else None,
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # Keep the session: v5 says so with clean_start, 3.1.1 with clean_session (paho
            # refuses the other one's flag).
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            clean_session=None if v5 else False,
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            properties=props,
            tls_context=ssl.create_default_context() if self._tls else None,
        )
        # aiomqtt exposes no manual-ack switch and its message iterator costs a task per
        # message; the underlying paho client (aiomqtt's documented base) gives both.
        raw: paho.Client = client._client  # noqa: SLF001
        raw.manual_ack_set(True)
        raw.connect_timeout = cfg.connect_timeout_s
        raw.on_message = self._on_paho_message
        on_connect = raw.on_connect

        def note_session(*args: Any) -> None:
            # (client, userdata, ConnectFlags, reason code, properties): paho's v2 callback
            self._session_present = bool(getattr(args[2], "session_present", False))
            if on_connect is not None:
                on_connect(*args)

        raw.on_connect = note_session
        assert self._loop is not None
        self._session_present = False
        self._reader = _BurstReader(
            client, self._loop, self._buffer_full, self._accept, has_properties=v5
        )
        return client

    async def _connect(self) -> aiomqtt.Client:
        client = self._make_client()
        # A new connection starts a new generation before CONNACK: messages the broker sends
        # right behind it must already belong to this connection's window.
        self._generation += 1
        self._window.clear()
        self._redeliver.clear()
        self._paho = client._client  # noqa: SLF001
        bound_s = self._cfg.connect_timeout_s * _CONNECT_PHASES + _CONNECT_SLACK_S
        try:
            with mqtt_errors("connect"):
                async with asyncio.timeout(bound_s):
                    await client.__aenter__()
        except BaseException:
            self._paho = None
            _abandon(client)
            raise
        return client

    async def _connection_loop(self) -> None:
        """The one reconnect task: connect, serve until lost, back off (capped, jittered)."""
        assert self._loop is not None
        attempt = 0
        while not self._closing.is_set():
            try:
                client = await self._connect()
            except MqttUnavailable as exc:
                log.warning("mqtt connect failed; retrying", error=str(exc), attempt=attempt)
            except FatalError as exc:
                self._fail(exc)
                return
            except Exception:
                # A driver bug must not end the session silently: log it and reconnect.
                log.exception("mqtt connect failed unexpectedly; retrying", attempt=attempt)
            else:
                since = self._loop.time()
                try:
                    await self._serve(client)
                except MqttUnavailable as exc:
                    log.warning("mqtt connection lost; reconnecting", error=str(exc))
                except FatalError as exc:
                    self._fail(exc)
                    return
                except Exception:
                    log.exception("mqtt connection failed unexpectedly; reconnecting")
                finally:
                    self._lost()
                    await self._disconnect(client)
                if self._loop.time() - since >= STABLE_CONNECTION_S:
                    attempt = 0  # a flapping broker keeps backing off; a stable one does not
            if self._closing.is_set():
                return
            delay_s = min(self._cfg.reconnect_max_s, self._cfg.reconnect_min_s * 2.0**attempt)
            delay_s *= random.uniform(0.5, 1.0)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._closing.wait()

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._client = client
        subs = list(self._subscriptions.values())
        if self._session_present and not any(s.topic_filter.startswith("$share/") for s in subs):
            # The broker kept our session, plain subscriptions included, and sends its backlog
            # right behind CONNACK, ahead of the SUBACK. The socket is read on meanwhile and
            # the backlog is handled as it comes, so the SUBACK arrives once what precedes it
            # is taken; should that take longer than the timeout (Kafka slow), the kept
            # subscriptions stand: log it, do not reconnect (that replayed the backlog and
            # timed out again, in a loop).
            await self._confirm_subscriptions(client, subs)
            self._raise_failure()
        elif self._session_present:
            # Shared subscriptions are not kept across a Mosquitto 2.0 restart even when the
            # session is: without the SUBACK nothing is known to flow, so wait for it.
            await self._subscribe(client, subs)
            await self._unsubscribe_retired(client)
        else:
            # A new session: nothing will be redelivered, and nothing flows before SUBACK.
            self._handled.clear()
            await self._subscribe(client, subs)
        self.connects += 1
        if self._on_connected is not None:
            self._on_connected()
        self._connected.set()
        self._ready.set()
        log.info(
            "mqtt connected",
            broker=f"{self._host}:{self._port}",
            client_id=self._cfg.client_id,
            protocol=self._cfg.protocol,
            subscriptions=sorted(self._subscriptions),
            session_present=self._session_present,
            generation=self._generation,
        )
        disconnected: asyncio.Future[Any] = client._disconnected  # noqa: SLF001
        closing: asyncio.Future[Any] = asyncio.ensure_future(self._closing.wait())
        redeliver: asyncio.Future[Any] = asyncio.ensure_future(self._redeliver.wait())
        waiters: set[asyncio.Future[Any]] = {disconnected, closing, redeliver}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            redeliver.cancel()
        if self._redeliver.is_set() and not self._closing.is_set():
            raise MqttUnavailable("buffer bound reached; reconnecting for redelivery")
        if disconnected.done():
            exc = None if disconnected.cancelled() else disconnected.exception()
            raise MqttUnavailable(f"mqtt connection lost: {exc}") from exc

    async def _confirm_subscriptions(
        self, client: aiomqtt.Client, subs: Sequence[Subscription]
    ) -> None:
        try:
            await self._subscribe(client, subs)
        except FatalError as exc:
            self._fail(exc)
            return
        except MqttUnavailable as exc:
            # The session's subscriptions stand at the broker; a lost link shows elsewhere.
            log.warning("mqtt re-subscribe not confirmed", error=str(exc))
        # Only now: until the new filters stand, the retired ones still deliver.
        await self._unsubscribe_retired(client)

    async def _unsubscribe_retired(self, client: aiomqtt.Client) -> None:
        """Drop filters of an earlier release from a kept session (no answer needed)."""
        for flt in self._retired:
            try:
                with mqtt_errors("unsubscribe"):
                    async with asyncio.timeout(self._cfg.connect_timeout_s):
                        await client.unsubscribe(flt, timeout=self._cfg.connect_timeout_s)
            except MqttUnavailable as exc:
                log.warning(
                    "mqtt unsubscribe of a retired filter failed", filter=flt, error=str(exc)
                )

    def _lost(self) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        # What was handled here may come back after the reconnect: settled but not acked
        # (an earlier message was still open), or acked while the broker went down.
        for message in self._window:
            if message.settled:
                self._remember(message)
        for message in self._recent:
            self._remember(message)
        self._recent.clear()
        # Messages of this connection can no longer be acknowledged; the broker redelivers.
        self._generation += 1
        self._window.clear()
        self._client = None
        if was_connected and not self._closing.is_set():
            log.warning("mqtt disconnected", generation=self._generation)

    async def _disconnect(self, client: aiomqtt.Client) -> None:
        self._paho = None
        disconnected: asyncio.Future[None] = client._disconnected  # noqa: SLF001
        try:
            if not disconnected.done():
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await client.__aexit__(None, None, None)
            elif client._lock.locked():  # noqa: SLF001
                client._lock.release()  # noqa: SLF001
        except (TimeoutError, aiomqtt.MqttError, OSError) as exc:
            log.warning("mqtt disconnect was not clean", error=repr(exc))
            _abandon(client)
        finally:
            if disconnected.done() and not disconnected.cancelled():
                disconnected.exception()  # retrieved: no "never retrieved" noise

    def _fail(self, exc: GhgwatchError) -> None:
        log.error("mqtt session failed", error=str(exc))
        self._failure = exc
        self._ready.set()


class _BurstReader:
    """Reads many MQTT packets per socket wake-up, and stops reading while the buffer is full.

    paho reads a packet with several tiny ``recv`` calls and handles one packet per
    ``loop_read``; aiomqtt calls ``loop_read`` once per readable event, which at 15,000
    messages/s is one event-loop turn per message. Installed on one paho client, this reads
    the socket in ``RECV_CHUNK_BYTES`` chunks and keeps handling packets while bytes are
    buffered. When the session's buffer is full it takes the socket out of the event loop:
    TCP flow control then holds the broker back, even a broker that sends a reconnect backlog
    beyond ReceiveMaximum (Mosquitto 2.0 does).
    """

    __slots__ = (
        "_accept",
        "_client",
        "_data",
        "_full",
        "_handle_publish",
        "_has_properties",
        "_loop",
        "_packet_read",
        "_pos",
        "_raw",
        "_rc_handle",
        "paused",
    )

    def __init__(
        self,
        client: aiomqtt.Client,
        loop: asyncio.AbstractEventLoop,
        full: Callable[[], bool],
        accept: Callable[[bytes, bytes, int, int, bool], None],
        *,
        has_properties: bool = True,
    ) -> None:
        self._client = client
        self._has_properties = has_properties  # MQTT v5 PUBLISH carries them, 3.1.1 does not
        self._accept = accept
        self._raw: paho.Client = client._client  # noqa: SLF001
        self._loop = loop
        self._full = full
        self._data = b""
        self._pos = 0
        self.paused = False
        self._packet_read = self._raw._packet_read  # noqa: SLF001
        self._rc_handle = self._raw._loop_rc_handle  # noqa: SLF001
        self._handle_publish = self._raw._handle_publish  # noqa: SLF001
        # Instance attributes shadow paho's methods for this client only.
        self._raw._sock_recv = self._recv  # type: ignore[method-assign]  # noqa: SLF001
        self._raw.loop_read = self.loop_read  # type: ignore[method-assign]
        self._raw._handle_publish = self._on_publish  # type: ignore[method-assign]  # noqa: SLF001

    def _on_publish(self) -> MQTTErrorCode:
        """Decode an MQTT v5 or 3.1.1 PUBLISH straight into the session.

        paho builds a Properties object, a message object, runs topic matching and debug
        logging for every PUBLISH: half the bridge's CPU. QoS 0/1 with manual acks needs none
        of it (paho itself sends nothing back for them); QoS 2 keeps paho's full handling. We
        never allow topic aliases (TopicAliasMaximum stays 0), so the topic is always present.
        """
        packet = bytes(self._raw._in_packet["packet"])  # noqa: SLF001
        command = self._raw._in_packet["command"]  # noqa: SLF001
        qos = (command & 0x06) >> 1
        if qos == 2:
            return self._handle_publish()
        end = 2 + int.from_bytes(packet[0:2], "big")
        topic = packet[2:end]
        mid = 0
        if qos:
            mid = int.from_bytes(packet[end : end + 2], "big")
            end += 2
        if self._has_properties:
            # Skip the v5 properties: a variable-byte-integer length, then that many bytes.
            props_len, shift = 0, 0
            while True:
                byte = packet[end]
                end += 1
                props_len |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
            end += props_len
        self._accept(topic, packet[end:], qos, mid, bool(command & 0x08))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._data):
            sock = self._raw._sock  # noqa: SLF001
            if sock is None:
                raise ConnectionError("mqtt socket is closed")
            try:
                data = sock.recv(RECV_CHUNK_BYTES)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
                raise BlockingIOError from exc
            if not data:
                return b""  # peer closed: paho handles it as a lost connection
            self._data, self._pos = data, 0
        start = self._pos
        self._pos = end = min(start + bufsize, len(self._data))
        return self._data[start:end]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle packets until the buffered bytes are used up (paho's ``loop_read`` contract)."""
        del max_packets  # paho ignores it too
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        for _ in range(READ_BURST_PACKETS_MAX):
            if self._full():
                self._pause()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            # One packet per full check. paho's own loop_read handles as many packets per
            # call as the client has publishes awaiting PUBACK (under a reject flood, hundreds
            # of status replies), which ran hundreds of PUBLISH packets past the ceiling: the
            # 1M fuzz run lost 10,343 acknowledged messages to the overflow branch.
            if self._raw._sock is None:  # noqa: SLF001
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN or self._pos >= len(self._data):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        # Still bytes buffered but the socket may stay quiet: finish them on the next turn.
        self._loop.call_soon(self._on_readable)
        return rc

    def _pause(self) -> None:
        sock = self._raw._sock  # noqa: SLF001
        if not self.paused and sock is not None:
            self.paused = True
            self._loop.remove_reader(sock.fileno())

    def resume(self) -> None:
        """Put the socket back into the event loop (the session's buffer has room again)."""
        sock = self._raw._sock  # noqa: SLF001
        if not self.paused or sock is None:
            return
        self.paused = False
        self._loop.add_reader(sock.fileno(), self._on_readable)
        if self._pos < len(self._data):
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        if self._raw._sock is None or self.paused:  # noqa: SLF001
            return
        try:
            self.loop_read()
        except Exception as exc:
            # What aiomqtt's own reader does: a failed read means the connection is gone.
            disconnected: asyncio.Future[Any] = self._client._disconnected  # noqa: SLF001
            if not disconnected.done():
                disconnected.set_exception(exc)


def _abandon(client: aiomqtt.Client) -> None:
    """Close a client's socket without ceremony (a failed or timed-out connect)."""
    raw = client._client  # noqa: SLF001
    raw.on_message = None
    with contextlib.suppress(Exception):
        raw.disconnect()
    with contextlib.suppress(Exception):
        raw._sock_close()  # noqa: SLF001
