"""Broker identity: a device credential cannot take the bridge's session or fake a status.

Issue 9, finding 4: nothing bound client ids to usernames in the shipped Mosquitto config, so
any device could connect with the bridge's (documented) client id and take over its session;
on ``up``'s broker anyone could publish a status for any device. These run the real broker,
from deploy/mosquitto/ and from the config ``up`` writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import pytest
from shipped_conf import shipped_mosquitto_conf

from core.settings import MqttSettings
from ghgwatch.embedded import (
    EMBEDDED_BRIDGE_USER,
    ManagedProcess,
    mosquitto_binary,
    mosquitto_password_line,
)

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

DEADLINE_S = 20.0
BRIDGE_ID = "ghgwatch-bridge-1"  # the README's (old default) bridge client id
DEVICE = "baotou.kundulun.picarro-01"
DEVICE_DATA = "ghg/v1/city/baotou/kundulun/picarro-01/data"
DEVICE_STATUS = "ghg/v1/city/baotou/kundulun/picarro-01/status"
OTHER = "beifang-power.dalate-plant.unit-3"
OTHER_STATUS = "ghg/v1/cems/beifang-power/dalate-plant/unit-3/status"
PASSWORDS = {"ghgwatch-bridge": "bridge-pw", DEVICE: "device-pw", OTHER: "other-pw"}


async def _shipped_broker(repo_root: Path, tmp_path: Path) -> ManagedProcess:
    """deploy/mosquitto/mosquitto.conf and acl.example on a free port in a temp dir."""
    binary = mosquitto_binary()
    assert binary is not None
    conf = shipped_mosquitto_conf(repo_root, tmp_path)
    port = conf.port
    shutil.copy(repo_root / "deploy" / "mosquitto" / "acl.example", tmp_path / "acl")
    (tmp_path / "passwd").write_text(
        "".join(mosquitto_password_line(u, p) + "\n" for u, p in PASSWORDS.items())
    )
    return await ManagedProcess(
        "mosquitto",
        [binary, "-c", str(conf.path)],
        "127.0.0.1",
        port,
        tmp_path / "mosquitto.log",
    ).start()


@contextlib.asynccontextmanager
async def _client(
    port: int, identifier: str, user: str | None = None, password: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=identifier,
        username=user,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        timeout=DEADLINE_S,
    ) as client:
        yield client


async def _first_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(DEADLINE_S):
        async for msg in client.messages:
            return msg
    raise AssertionError("no message")


async def _publish_denied_or_dropped(client: aiomqtt.Client, topic: str) -> None:
    """Publish a fake; the broker may refuse it (v5 reason code) or drop it silently."""
    with contextlib.suppress(aiomqtt.MqttError):
        await client.publish(topic, b'{"status": "rejected", "reason": "fake"}', qos=1)


async def test_a_device_credential_with_the_bridge_client_id_cannot_take_its_session(
    repo_root: Path, tmp_path: Path
) -> None:
    """With the shipped config a device connecting under the bridge's client id gets its
    own username as id: the bridge stays connected and keeps receiving readings."""
    broker = await _shipped_broker(repo_root, tmp_path)
    try:
        async with _client(broker.port, BRIDGE_ID, "ghgwatch-bridge", "bridge-pw") as bridge:
            await bridge.subscribe("ghg/v1/+/+/+/+/data", qos=1)
            async with _client(broker.port, BRIDGE_ID, DEVICE, "device-pw") as thief:
                await thief.subscribe("ghg/v1/+/+/+/+/data", qos=1)
                await thief.publish(DEVICE_DATA, b"reading-1", qos=1)
                msg = await _first_message(bridge)  # the bridge's session is still its own
                assert msg.payload == b"reading-1"
                # The device reads no one's data: its first message is its own status.
                await thief.subscribe(DEVICE_STATUS, qos=1)
                await thief.publish(DEVICE_DATA, b"reading-2", qos=1)
                await bridge.publish(DEVICE_STATUS, b"marker", qos=1)
                assert (await _first_message(thief)).payload == b"marker"
            assert (await _first_message(bridge)).payload == b"reading-2"
    finally:
        await broker.stop()


async def test_with_the_shipped_config_a_device_cannot_publish_a_status(
    repo_root: Path, tmp_path: Path
) -> None:
    """Only the bridge writes status topics: another device's fake never arrives."""
    broker = await _shipped_broker(repo_root, tmp_path)
    try:
        async with (
            _client(broker.port, "victim", OTHER, "other-pw") as victim,
            _client(broker.port, "faker", DEVICE, "device-pw") as faker,
            _client(broker.port, BRIDGE_ID, "ghgwatch-bridge", "bridge-pw") as bridge,
        ):
            await victim.subscribe(OTHER_STATUS, qos=1)
            await _publish_denied_or_dropped(faker, OTHER_STATUS)
            await _publish_denied_or_dropped(faker, DEVICE_STATUS)
            await bridge.publish(OTHER_STATUS, b"genuine", qos=1)
            assert (await _first_message(victim)).payload == b"genuine"
    finally:
        await broker.stop()


async def test_on_ups_broker_devices_publish_data_but_no_status(
    own_mosquitto: Callable[..., Awaitable[ManagedProcess]],
) -> None:
    """``up``'s Mosquitto: anonymous devices publish readings and read statuses, but a
    status is only accepted from the bridge's user (its password in the process's login)."""
    broker = await own_mosquitto(protect_status=True)
    assert broker.login is not None
    user, password = broker.login
    assert user == EMBEDDED_BRIDGE_USER
    async with (
        _client(broker.port, "victim") as victim,
        _client(broker.port, "faker") as faker,
        _client(broker.port, "bridge-x", user, password) as bridge,
    ):
        await bridge.subscribe("t/v1/+/+/+/+/data", qos=1)
        await victim.subscribe("t/v1/cems/a/b/c/status", qos=1)
        await faker.publish("t/v1/city/a/b/c/data", b"reading", qos=1)
        assert (await _first_message(bridge)).payload == b"reading"
        await _publish_denied_or_dropped(faker, "t/v1/cems/a/b/c/status")
        await bridge.publish("t/v1/cems/a/b/c/status", b"genuine", qos=1)
        assert (await _first_message(victim)).payload == b"genuine"
    with pytest.raises(aiomqtt.MqttError):
        async with _client(broker.port, "guess", user, "wrong"):
            pass


def test_the_default_bridge_client_id_is_not_a_guessable_constant() -> None:
    """Unless configured, the client id is derived per installation, not ghgwatch-bridge-1."""
    first, second = MqttSettings(), MqttSettings()
    assert first.client_id == second.client_id  # stable: the broker keeps its session
    assert first.client_id != BRIDGE_ID
    assert first.client_id.startswith("ghgwatch-bridge-")
    assert len(first.client_id) >= len("ghgwatch-bridge-") + 16
    assert MqttSettings(client_id="mine").client_id == "mine"
