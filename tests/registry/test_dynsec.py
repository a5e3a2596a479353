"""Per-device credentials and ACLs on a real Mosquitto with the dynamic-security plugin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiomqtt
import pytest
from registry_helpers import BRIDGE_USER, NOTIFIER_USER, ROOT, Broker, needs_dynsec

from registry.models import DeviceRecord

pytestmark = needs_dynsec

WAIT_S = 10.0
A = DeviceRecord(device_id="ordos-coal/buertai/t4-0101", kind="mine", location_class="T4")
B = DeviceRecord(device_id="baotou/kundulun/picarro-01", kind="city")


@contextlib.asynccontextmanager
async def _client(
    port: int, user: str | None, password: str | None, ident: str = "x"
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=ident,
        protocol=aiomqtt.ProtocolVersion.V5, timeout=WAIT_S,
    ) as client:  # fmt: skip
        yield client


async def _refused(port: int, user: str | None, password: str | None) -> bool:
    try:
        async with _client(port, user, password):
            return False
    except aiomqtt.MqttError:
        return True


async def _next(client: aiomqtt.Client, timeout_s: float = WAIT_S) -> aiomqtt.Message | None:
    try:
        async with asyncio.timeout(timeout_s):
            return await anext(aiter(client.messages))
    except TimeoutError:
        return None


async def _drain(client: aiomqtt.Client, timeout_s: float) -> list[aiomqtt.Message]:
    out: list[aiomqtt.Message] = []
    while (m := await _next(client, timeout_s)) is not None:
        out.append(m)
    return out


async def test_dynsec_device_rights(dynsec_broker: Callable[..., Awaitable[Broker]]) -> None:
    broker = await dynsec_broker()
    async with broker.dynsec() as dynsec:
        await dynsec.add_device(A, "pw-a")
        await dynsec.add_device(B, "pw-b")
    assert await _refused(broker.port, None, None), "anonymous client accepted"
    assert await _refused(broker.port, "nobody", "x"), "unknown client accepted"
    assert await _refused(broker.port, A.mqtt_username, "wrong"), "wrong password accepted"
    async with (
        _client(broker.port, BRIDGE_USER, broker.passwords[BRIDGE_USER]) as bridge,
        _client(broker.port, A.mqtt_username, "pw-a") as dev_a,
    ):
        await bridge.subscribe(f"{ROOT}/#", qos=1)
        await dev_a.subscribe(B.status_topic(ROOT), qos=1)  # refused by the ACL
        await dev_a.subscribe(A.status_topic(ROOT), qos=1)
        await dev_a.publish(B.data_topic(ROOT), b"forged", qos=1)
        await dev_a.publish(A.data_topic(ROOT), b"mine", qos=1)
        got = await _next(bridge)
        assert got is not None
        assert str(got.topic) == A.data_topic(ROOT)
        assert got.payload == b"mine"
        await bridge.publish(B.status_topic(ROOT), b"status-b", qos=1)
        await bridge.publish(A.status_topic(ROOT), b"status-a", qos=1)
        got = await _next(dev_a)
        assert got is not None
        assert str(got.topic) == A.status_topic(ROOT)
        assert got.payload == b"status-a"
        # the bridge never got the forged reading (only its own status replies echo back),
        # and the device heard nothing of B
        rest = await _drain(bridge, 1.0)
        assert b"forged" not in [m.payload for m in rest]
        assert all(str(m.topic).endswith("/status") for m in rest)
        assert await _next(dev_a, 0.5) is None


async def test_dynsec_disable_and_rotate_cut_off(
    dynsec_broker: Callable[..., Awaitable[Broker]],
) -> None:
    broker = await dynsec_broker()
    async with broker.dynsec() as dynsec:
        await dynsec.add_device(A, "pw-a")
        await dynsec.add_device(B, "pw-b")
    async with (
        _client(broker.port, A.mqtt_username, "pw-a", "a") as dev_a,
        _client(broker.port, B.mqtt_username, "pw-b", "b") as dev_b,
    ):
        async with broker.dynsec() as dynsec:
            await dynsec.set_enabled(A.model_copy(update={"enabled": False}), enabled=False)
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(WAIT_S):
                await anext(aiter(dev_a.messages))
        await dev_b.publish(B.data_topic(ROOT), b"still here", qos=1)  # B stays connected
        assert await _refused(broker.port, A.mqtt_username, "pw-a")
        async with broker.dynsec() as dynsec:
            await dynsec.rotate(B, "pw-b2")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(WAIT_S):
                await anext(aiter(dev_b.messages))
    assert await _refused(broker.port, B.mqtt_username, "pw-b")
    assert not await _refused(broker.port, B.mqtt_username, "pw-b2")
    assert await _refused(broker.port, NOTIFIER_USER, "x")


async def test_dynsec_service_roles(dynsec_broker: Callable[..., Awaitable[Broker]]) -> None:
    """The notifier writes alerts only; the bridge writes statuses, never readings."""
    broker = await dynsec_broker()
    async with broker.dynsec() as dynsec:
        await dynsec.add_device(B, "pw-b")
    async with (
        _client(broker.port, B.mqtt_username, "pw-b", "b") as dev_b,
        _client(broker.port, BRIDGE_USER, broker.passwords[BRIDGE_USER], "br") as bridge,
        _client(broker.port, NOTIFIER_USER, broker.passwords[NOTIFIER_USER], "n") as notifier,
    ):
        await bridge.subscribe(f"{ROOT}/#", qos=1)
        await dev_b.subscribe(B.status_topic(ROOT), qos=1)
        await dev_b.subscribe(f"{ROOT}/alerts/#", qos=1)  # refused: not its topic
        await notifier.publish(B.data_topic(ROOT), b"notifier forged", qos=1)
        await notifier.publish(B.status_topic(ROOT), b"notifier status", qos=1)
        await notifier.publish(f"{ROOT}/alerts/baotou/kundulun", b"siren", qos=1)
        await bridge.publish(B.data_topic(ROOT), b"bridge forged", qos=1)
        got = [m.payload for m in await _drain(bridge, 1.0)]
        assert got == [b"siren"]
        assert await _next(dev_b, 0.3) is None
