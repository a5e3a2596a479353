"""Brokers without the plugin (generated password and ACL files), and TLS with the
certificates ``ghgwatch certs`` makes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiomqtt
import asyncpg
import pytest
from registry_helpers import BRIDGE_USER, ROOT, Broker, needs_dynsec

from core.settings import Settings
from ghgwatch.embedded import mosquitto_binary
from processors.storage import migrate
from registry.brokerconf import TlsFiles
from registry.certs import CertFiles, make_client_cert, make_dev_ca, make_server_cert
from registry.credentials import mosquitto_password_line
from registry.models import DeviceRecord
from registry.onboard import FilesApplier, Onboarding

WAIT_S = 10.0
A = DeviceRecord(device_id="beifang-power/dalate-plant/unit-3", kind="cems", cems_class="600mw_sc")
B = DeviceRecord(device_id="baotou/kundulun/picarro-01", kind="city")


@contextlib.asynccontextmanager
async def _client(
    port: int,
    user: str | None,
    password: str | None,
    *,
    tls: ssl.SSLContext | None = None,
    timeout: float = WAIT_S,
) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1" if tls is None else "localhost", port, username=user, password=password,
        identifier=user or "anon", protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout,
        tls_context=tls,
    ) as client:  # fmt: skip
        yield client


async def _refused(port: int, user: str | None, password: str | None) -> bool:
    try:
        async with _client(port, user, password):
            return False
    except aiomqtt.MqttError:
        return True


async def _refused_soon(port: int, user: str, password: str) -> bool:
    """Refused within WAIT_S (Mosquitto rereads its files on SIGHUP, with no reply to await)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WAIT_S):
            while not await _refused(port, user, password):
                await asyncio.sleep(0.05)
            return True
    return False


async def _messages(client: aiomqtt.Client, timeout_s: float) -> list[aiomqtt.Message]:
    out: list[aiomqtt.Message] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                out.append(message)
    return out


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
async def test_generated_files_confine_devices(
    files_broker: Callable[[Path, Path], Awaitable[Broker]],
    settings_factory: Callable[..., Settings],
    pg_url: str,
    tmp_path: Path,
) -> None:
    passwd, acl = tmp_path / "mosquitto.passwd", tmp_path / "acl"
    passwd.write_text(mosquitto_password_line(BRIDGE_USER, "bridge-pw") + "\n")
    settings = settings_factory()
    await migrate(pg_url, settings.db)
    conn = await asyncpg.connect(pg_url)
    broker: Broker | None = None

    async def reload() -> None:
        if broker is not None and broker.proc.proc is not None:
            broker.proc.proc.send_signal(signal.SIGHUP)

    try:
        applier = FilesApplier(
            passwd, acl, root=ROOT, alerts_root=f"{ROOT}/alerts",
            bridge_users=(BRIDGE_USER,), notifier_user="ghgwatch-notifier", reload=reload,
        )  # fmt: skip
        onboarding = Onboarding(conn, applier)
        a = await onboarding.add(A)
        b = await onboarding.add(B)
        assert passwd.stat().st_mode & 0o077 == 0
        assert a.password not in passwd.read_text()
        assert f"{BRIDGE_USER}:" in passwd.read_text()  # the service line is kept
        broker = await files_broker(passwd, acl)
        port = broker.port
        assert await _refused(port, None, None)
        assert await _refused(port, "stranger", "x")
        async with (
            _client(port, BRIDGE_USER, "bridge-pw") as bridge,
            _client(port, a.username, a.password) as dev_a,
        ):
            await bridge.subscribe(f"{ROOT}/#", qos=1)
            await dev_a.subscribe(B.status_topic(ROOT), qos=1)
            await dev_a.subscribe(A.status_topic(ROOT), qos=1)
            await dev_a.publish(B.data_topic(ROOT), b"forged", qos=1)
            await dev_a.publish(A.data_topic(ROOT), b"own", qos=1)
            await bridge.publish(B.status_topic(ROOT), b"status-b", qos=1)
            await bridge.publish(A.status_topic(ROOT), b"status-a", qos=1)
            got_bridge = await _messages(bridge, 1.5)
            got_a = await _messages(dev_a, 0.5)
        data = [m.payload for m in got_bridge if str(m.topic).endswith("/data")]
        assert data == [b"own"]
        assert [(str(m.topic), m.payload) for m in got_a] == [(A.status_topic(ROOT), b"status-a")]

        # disabled: removed from both files; after the reload it cannot log in
        await onboarding.set_enabled(A.device_id, False)
        assert a.username not in passwd.read_text()
        assert await _refused_soon(port, a.username, a.password)
        rotated = await onboarding.rotate(B.device_id)
        assert await _refused_soon(port, b.username, b.password)
        assert not await _refused(port, rotated.username, rotated.password)
    finally:
        await conn.close()


@needs_dynsec
# paho leaves its TLS socket to the garbage collector after a disconnect (ResourceWarning)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_tls_listener_with_generated_certificates(
    dynsec_broker: Callable[..., Awaitable[Broker]], tmp_path: Path
) -> None:
    out = tmp_path / "tls"
    ca = make_dev_ca(out)
    server = make_server_cert(ca, out, ["localhost", "127.0.0.1"])
    make_client_cert(ca, out / "clients", B.mqtt_username)
    broker = await dynsec_broker(TlsFiles(ca.cert, server.cert, server.key))
    assert broker.tls_port is not None
    async with broker.dynsec() as dynsec:
        await dynsec.add_device(B, "pw-b")

    trusting = ssl.create_default_context(cafile=str(ca.cert))
    async with _client(broker.tls_port, B.mqtt_username, "pw-b", tls=trusting) as dev:
        await dev.publish(B.data_topic(ROOT), b"over tls", qos=1)

    # a client that does not trust the development CA refuses the broker's certificate
    with pytest.raises(aiomqtt.MqttError):
        async with _client(
            broker.tls_port, B.mqtt_username, "pw-b", tls=ssl.create_default_context()
        ):
            pass


def _tls(ca: Path, client: CertFiles | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@needs_dynsec
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_tls_listener_requires_client_certificate(
    dynsec_broker: Callable[..., Awaitable[Broker]], tmp_path: Path
) -> None:
    """``require_client_cert``: a device with a certificate from ``ghgwatch certs`` (and its
    password) connects; the same device without one is refused."""
    out = tmp_path / "tls"
    ca = make_dev_ca(out)
    server = make_server_cert(ca, out, ["localhost", "127.0.0.1"])
    client_cert = make_client_cert(ca, out / "clients", B.mqtt_username)
    broker = await dynsec_broker(
        TlsFiles(ca.cert, server.cert, server.key, require_client_cert=True)
    )
    assert broker.tls_port is not None
    async with broker.dynsec() as dynsec:
        await dynsec.add_device(B, "pw-b")
    tls_port = broker.tls_port
    async with _client(tls_port, B.mqtt_username, "pw-b", tls=_tls(ca.cert, client_cert)) as dev:
        await dev.publish(B.data_topic(ROOT), b"with a certificate", qos=1)
    # a refused TLS handshake surfaces as the client's timeout: a short one (an accepted
    # connection takes milliseconds here)
    with pytest.raises(aiomqtt.MqttError):
        async with _client(tls_port, B.mqtt_username, "pw-b", tls=_tls(ca.cert), timeout=2.0):
            pass
    # a certificate from another CA is refused too
    other = make_dev_ca(tmp_path / "other")
    stranger = make_client_cert(other, tmp_path / "other", B.mqtt_username)
    with pytest.raises(aiomqtt.MqttError):
        async with _client(
            tls_port, B.mqtt_username, "pw-b", tls=_tls(ca.cert, stranger), timeout=2.0
        ):
            pass


@needs_dynsec
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_tls_device_cannot_take_another_client_id(
    dynsec_broker: Callable[..., Awaitable[Broker]], tmp_path: Path
) -> None:
    """On the TLS listener too the client id is the username: a device that asks for
    another client's id does not take over (and disconnect) that client's session."""
    out = tmp_path / "tls"
    ca = make_dev_ca(out)
    server = make_server_cert(ca, out, ["localhost", "127.0.0.1"])
    broker = await dynsec_broker(TlsFiles(ca.cert, server.cert, server.key))
    assert broker.tls_port is not None
    async with broker.dynsec() as dynsec:
        await dynsec.add_device(A, "pw-a")
        await dynsec.add_device(B, "pw-b")
    thief = aiomqtt.Client(
        "localhost", broker.tls_port, username=B.mqtt_username, password="pw-b",
        identifier=A.mqtt_username, protocol=aiomqtt.ProtocolVersion.V5, timeout=WAIT_S,
        tls_context=_tls(ca.cert),
    )  # fmt: skip
    async with (
        _client(broker.tls_port, A.mqtt_username, "pw-a", tls=_tls(ca.cert)) as victim,
        thief,
    ):
        await thief.publish(B.data_topic(ROOT), b"thief", qos=1)
        # the victim is still connected: its QoS 1 publish is acknowledged
        await asyncio.sleep(0.5)
        await victim.publish(A.data_topic(ROOT), b"still here", qos=1, timeout=WAIT_S)
