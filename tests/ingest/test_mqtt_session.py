"""The MQTT session adapter on a real broker: in-order acks, redelivery, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiomqtt
import paho.mqtt.client as paho
import pytest
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from ingest_helpers import DEADLINE_S, mqtt_host_port
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import ConfigurationError, GhgwatchError, RejectedReading
from core.settings import Settings
from ingest import (
    CredentialsRefused,
    InboundMessage,
    MqttSession,
    MqttUnavailable,
    SessionClosed,
    Subscription,
    mqtt_errors,
)


def _connack(code: int) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, identifier=code)  # type: ignore[no-untyped-call]


async def _receive(session: MqttSession, count: int) -> list[InboundMessage]:
    got: list[InboundMessage] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(got) < count:
            got.extend(await session.receive(count - len(got), 0.2))
    return got


async def test_acks_leave_in_arrival_order_and_unacked_messages_come_back(
    fast_settings: Callable[..., Settings],
) -> None:
    """An unsettled first message holds back the acks of later ones; after reconnecting with
    the same client id the broker redelivers all three, and once acked nothing comes back."""
    settings = fast_settings()
    root = settings.mqtt.topic_root
    subscription = Subscription(f"{root}/ack-order/#", qos=1)
    host, port = mqtt_host_port(settings)
    url = settings.mqtt_url()

    async with MqttSession(settings.mqtt, url, subscriptions=[subscription]) as session:
        await session.wait_connected(DEADLINE_S)
        async with aiomqtt.Client(host, port) as publisher:
            for n in range(3):
                await publisher.publish(f"{root}/ack-order/x", f"m{n}".encode(), qos=1)
        first, second, third = await _receive(session, 3)
        assert [m.payload for m in (first, second, third)] == [b"m0", b"m1", b"m2"]
        session.ack(second)
        session.ack(third)
        assert session.in_flight == 3

    async with MqttSession(settings.mqtt, url, subscriptions=[subscription]) as session:
        await session.wait_connected(DEADLINE_S)
        again = await _receive(session, 3)
        assert [m.payload for m in again] == [b"m0", b"m1", b"m2"]
        for message in again:
            assert session.ack(message)
        assert session.in_flight == 0
        # QoS 1 is at-least-once: a broker taking the session over from the closing first
        # connection may send a copy twice. Settle any such copy too before closing.
        for late in await session.receive(10, 0.5):
            assert late.payload in {b"m0", b"m1", b"m2"}
            session.ack(late)
        assert session.in_flight == 0

    async with MqttSession(settings.mqtt, url, subscriptions=[subscription]) as session:
        await session.wait_connected(DEADLINE_S)
        assert await session.receive(10, 0.5) == []


async def test_a_closed_session_cannot_be_reopened(settings: Settings) -> None:
    """Like a closed httpx client, a closed MQTT session refuses to open again."""
    session = MqttSession(settings.mqtt, settings.mqtt_url())
    await session.open()
    await session.wait_connected(DEADLINE_S)
    await session.close()
    with pytest.raises(SessionClosed):
        await session.open()


def test_a_malformed_url_is_a_configuration_error(settings: Settings) -> None:
    """A URL that is not mqtt://host:port fails at construction, not at the first reconnect."""
    with pytest.raises(ConfigurationError):
        MqttSession(settings.mqtt, "http://127.0.0.1:1883")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (MqttConnectError(_connack(0x86)), CredentialsRefused),  # bad user name or password
        (MqttConnectError(_connack(0x87)), CredentialsRefused),  # not authorized
        (MqttConnectError(_connack(0x8A)), CredentialsRefused),  # banned
        (MqttConnectError(5), CredentialsRefused),  # MQTT 3.1.1: not authorised
        (MqttConnectError(4), CredentialsRefused),  # MQTT 3.1.1: bad user name or password
        (MqttConnectError(_connack(0x88)), MqttUnavailable),  # server unavailable
        (MqttConnectError(_connack(0x89)), MqttUnavailable),  # server busy
        (MqttCodeError(paho.MQTT_ERR_CONN_LOST, "lost"), MqttUnavailable),
        (aiomqtt.MqttError("Operation timed out"), MqttUnavailable),
        (aiomqtt.MqttReentrantError("reentered"), MqttUnavailable),
        (paho.WebsocketConnectionError("handshake"), MqttUnavailable),
        (ConnectionRefusedError(111, "refused"), MqttUnavailable),
        (OSError("network unreachable"), MqttUnavailable),
        (TimeoutError(), MqttUnavailable),
    ],
)
def test_every_driver_error_maps_onto_the_error_tree(
    raised: BaseException, expected: type[GhgwatchError]
) -> None:
    """Each aiomqtt/paho/socket error we claim to handle becomes a ghgwatch error, chained."""
    with pytest.raises(expected) as caught, mqtt_errors("connect"):
        raise raised
    assert caught.value.__cause__ is raised


def test_ghgwatch_errors_pass_through_the_mapping_untouched() -> None:
    """An error already on the tree is not wrapped again."""
    original = RejectedReading("schema")
    with pytest.raises(RejectedReading) as caught, mqtt_errors("publish"):
        raise original
    assert caught.value is original


async def test_a_message_past_the_hard_buffer_bound_comes_back_by_a_reconnect(
    fast_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffer's hard bound is only reached if the burst reader's pause is bypassed; a
    QoS 1 message dropped there is unacknowledged, and on a connection that stays up the
    broker never sends it again. So the session reconnects (keeping its session) and the
    broker redelivers: every message arrives."""
    settings = fast_settings(mqtt={"receive_maximum": 100})
    root = settings.mqtt.topic_root
    subscription = Subscription(f"{root}/overflow/#", qos=1)
    host, port = mqtt_host_port(settings)
    monkeypatch.setattr(MqttSession, "_buffer_full", lambda _self: False)  # reader never pauses
    count = 60

    async with MqttSession(
        settings.mqtt, settings.mqtt_url(), subscriptions=[subscription]
    ) as session:
        session._buffer_cap = 4  # hard bound 4 + slack (16), below the 60 the broker sends at once
        await session.wait_connected(DEADLINE_S)
        async with aiomqtt.Client(host, port) as publisher:
            for n in range(count):
                await publisher.publish(f"{root}/overflow/x", f"m{n}".encode(), qos=1)
        await asyncio.sleep(0.5)  # the broker pushes up to 100; the bound drops most
        got: set[bytes] = set()
        # Each connection takes about 20 (the bound) of what the broker sends again.
        async with asyncio.timeout(DEADLINE_S):
            while len(got) < count:
                for message in await session.receive(50, 0.2):
                    got.add(message.payload)
                    session.ack(message)
        assert session.overflowed > 0
        assert session.connects >= 2
    assert got == {f"m{n}".encode() for n in range(count)}
