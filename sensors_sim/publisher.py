"""MQTT adapter of the simulator: paho-mqtt driven by the asyncio loop, QoS 1 with capped in-flight.

paho's packet ids are 16-bit, so a publisher with more than 65,535 unacknowledged QoS 1
messages overwrites its own entries and stalls for good; :class:`MqttPublisher` therefore
waits for acknowledgements once ``max_inflight`` messages are out (DOMAIN.md, "Known
pitfalls"). paho runs on the caller's event loop (socket readiness callbacks), not in a thread,
so acknowledgements are counted without locks. paho errors and socket errors are translated
onto :mod:`core.errors` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import uuid
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import BrokerUnavailable, ConfigurationError, FatalError
from core.settings import MqttSettings

__all__ = ["DEFAULT_MAX_INFLIGHT", "MqttPublisher", "parse_mqtt_url"]

log = structlog.get_logger(__name__)

DEFAULT_MAX_INFLIGHT = 1000  # well under paho's 65,535 packet ids
MISC_INTERVAL_S = 1.0  # paho's keepalive and retry housekeeping cadence
DISCONNECT_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
# CONNACK reason codes that mean "these credentials or this client will never be accepted".
_REFUSED = {"Not authorized", "Bad user name or password", "Client identifier not valid"}


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """Split ``mqtt://host:port`` (or ``mqtts://``) into host, port and whether to use TLS.

    Raises:
        ConfigurationError: the URL is not an MQTT URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigurationError(f"not an MQTT URL: {url!r} (want mqtt://host:port)")
    return (
        parts.hostname,
        parts.port or _DEFAULT_PORTS[parts.scheme],
        parts.scheme
        in {
            "mqtts",
            "ssl",
        },
    )


class MqttPublisher:
    """Publish QoS 1 messages with at most ``max_inflight`` unacknowledged.

    Use as ``async with MqttPublisher(cfg, url) as pub: await pub.publish(topic, payload)``;
    leaving the block waits (bounded) for outstanding acknowledgements and disconnects.

    Args:
        cfg: the ``mqtt`` settings section (protocol, credentials, keepalive, connect timeout).
        url: the broker URL.
        client_id: MQTT client id; a unique one by default.
        max_inflight: unacknowledged publishes allowed before :meth:`publish` waits.
        qos: 1 (acknowledged) or 0.
    """

    def __init__(
        self,
        cfg: MqttSettings,
        url: str,
        *,
        client_id: str | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        qos: int = 1,
    ) -> None:
        self._cfg = cfg
        self._host, self._port, self._tls = parse_mqtt_url(url)
        self._client_id = client_id or f"ghgwatch-sim-{uuid.uuid4().hex[:8]}"
        self._max_inflight = max_inflight
        self._qos = qos
        self._published = 0
        self._acked = 0
        self._capacity = asyncio.Event()
        self._drained = asyncio.Event()
        self._connected: asyncio.Future[ReasonCode] | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._client = self._make_client()

    @property
    def published(self) -> int:
        """Messages handed to the broker so far."""
        return self._published

    @property
    def acked(self) -> int:
        """Messages the broker acknowledged (QoS 1) or that were written (QoS 0)."""
        return self._acked

    @property
    def inflight(self) -> int:
        """Published but not yet acknowledged."""
        return self._published - self._acked

    def _make_client(self) -> paho.Client:
        # The protocol of mqtt.protocol: a 3.1.1-only broker (amqtt) refuses v5 clients. Both
        # start clean (v5: paho's default clean_start), since a publisher keeps no session.
        v5 = self._cfg.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
        )
        # Our own cap bounds what is in flight. paho's (default 20) would throttle us, and any
        # non-zero paho limit rescans every queued message on each PUBACK (quadratic).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.connect_timeout = self._cfg.connect_timeout_s
        if self._cfg.username is not None:
            password = self._cfg.password.get_secret_value() if self._cfg.password else None
            client.username_pw_set(self._cfg.username, password)
        if self._tls:
            client.tls_set_context(ssl.create_default_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    async def __aenter__(self) -> MqttPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(drain_timeout_s=DISCONNECT_TIMEOUT_S if exc is None else 0.0)

    async def connect(self) -> None:
        """Connect and wait for the broker's CONNACK.

        Raises:
            BrokerUnavailable: the broker cannot be reached or did not answer in time.
            FatalError: the broker refused these credentials or this client id.
        """
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        try:
            # A blocking TCP connect bounded by connect_timeout; the CONNACK is awaited below.
            self._client.connect(self._host, self._port, keepalive=self._cfg.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUnavailable(
                f"mqtt connect to {self._host}:{self._port}: {type(exc).__name__}: {exc}"
            ) from exc
        self._misc_task = asyncio.create_task(self._misc_loop(), name="sim-mqtt-misc")
        try:
            async with asyncio.timeout(self._cfg.connect_timeout_s):
                code = await self._connected
        except TimeoutError as exc:
            await self.close(drain_timeout_s=0.0)
            raise BrokerUnavailable(
                f"mqtt: no CONNACK from {self._host}:{self._port} within "
                f"{self._cfg.connect_timeout_s} s"
            ) from exc
        if code.is_failure:
            await self.close(drain_timeout_s=0.0)
            if code.getName() in _REFUSED:
                raise FatalError(f"mqtt broker refused the simulator: {code.getName()}")
            raise BrokerUnavailable(f"mqtt broker refused the connection: {code.getName()}")
        self._capacity.set()
        log.debug("simulator connected", broker=f"{self._host}:{self._port}")

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish one message, first waiting while ``max_inflight`` are unacknowledged.

        Raises:
            BrokerUnavailable: the connection is lost.
        """
        if self._published - self._acked >= self._max_inflight:
            self._capacity.clear()
            await self._capacity.wait()
        if self._failure is not None:
            raise BrokerUnavailable(f"mqtt publish: {self._failure}") from self._failure
        info = self._client.publish(topic, payload, qos=self._qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"mqtt publish: {paho.error_string(info.rc)}")
        self._published += 1
        if self._qos == 0:
            self._acked += 1

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every published message to be acknowledged.

        Returns:
            True when nothing is left unacknowledged.
        """
        if self.inflight == 0:
            return True
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self.inflight > 0 and self._failure is None:
                    await self._drained.wait()
                    self._drained.clear()
        return self.inflight == 0

    async def close(self, *, drain_timeout_s: float) -> None:
        """Wait (bounded) for outstanding acknowledgements, then disconnect."""
        if self._closing:
            return
        if drain_timeout_s > 0 and self._failure is None and not await self.drain(drain_timeout_s):
            log.warning("simulator closing with unacknowledged messages", inflight=self.inflight)
        self._closing = True
        if self._client.is_connected():
            self._client.disconnect()
            # Let the loop write the DISCONNECT before the socket goes.
            await asyncio.sleep(0)
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task
        self._client.loop_misc()
        if self._client.socket() is not None:
            with contextlib.suppress(OSError):
                self._client.loop_write()
            self._on_socket_close(self._client, None, self._client.socket())

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_NO_CONN and not self._closing:
                self._fail(ConnectionError("connection lost"))
                return

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("simulator lost the broker", error=str(exc))
        # Wake anyone waiting for capacity or acks so they see the failure.
        self._capacity.set()
        self._drained.set()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(BrokerUnavailable(str(exc)))

    # paho callbacks: all run on the event loop thread (socket readiness or our own calls).

    def _on_connect(
        self, _c: paho.Client, _u: Any, _flags: Any, code: ReasonCode, _props: Any
    ) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(code)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _flags: Any, code: ReasonCode, _props: Any
    ) -> None:
        if not self._closing:
            self._fail(ConnectionError(f"disconnected: {code.getName()}"))

    def _on_publish(
        self, _c: paho.Client, _u: Any, _mid: int, _code: ReasonCode, _props: Any
    ) -> None:
        if self._qos == 0:
            return
        self._acked += 1
        if self._published - self._acked < self._max_inflight:
            self._capacity.set()
        if self._published == self._acked:
            self._drained.set()

    def _on_socket_open(self, client: paho.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._read)
        if isinstance(sock, socket.socket):
            # More kernel buffer: fewer partial writes at tens of thousands of messages/s.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * 1024 * 1024)

    def _on_socket_close(self, _client: paho.Client, _u: Any, sock: Any) -> None:
        if self._loop is not None and sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_register_write(self, _client: paho.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, self._write)

    def _on_unregister_write(self, _client: paho.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _read(self) -> None:
        rc = self._client.loop_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._closing:
            self._fail(ConnectionError(paho.error_string(rc)))

    def _write(self) -> None:
        rc = self._client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._closing:
            self._fail(ConnectionError(paho.error_string(rc)))
