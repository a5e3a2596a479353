"""``ghgwatch up --tls``: the embedded Mosquitto gets a TLS listener with development certs."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack

import aiomqtt
import pytest

from core.settings import Settings
from ghgwatch.embedded import mosquitto_binary
from ghgwatch.up import _start_embedded


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
async def test_up_tls_listener(settings_factory: Callable[..., Settings]) -> None:
    base = settings_factory()
    settings = base.model_copy(update={"mqtt": base.mqtt.model_copy(update={"url": None})})
    async with AsyncExitStack() as stack:
        _resolved, _embedded, notes = await _start_embedded(settings, stack, "auto", tls=True)
        [note] = [n for n in notes if n.startswith("MQTT over TLS")]
        match = re.search(r"mqtts://localhost:(\d+)", note)
        assert match is not None
        ca = settings.data_dir / "tls" / "ca.crt"
        trusting = ssl.create_default_context(cafile=str(ca))
        _reader, writer = await asyncio.open_connection(
            "localhost", int(match.group(1)), ssl=trusting
        )
        assert writer.get_extra_info("peercert") is not None
        writer.close()
        await writer.wait_closed()


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
# paho leaves its TLS socket to the garbage collector after a disconnect (ResourceWarning)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_up_tls_requires_client_certificate(
    settings_factory: Callable[..., Settings],
) -> None:
    """``up --tls --require-client-cert``: the client certificate ``up`` makes gets in over
    TLS, a client without a certificate is refused."""
    base = settings_factory()
    settings = base.model_copy(update={"mqtt": base.mqtt.model_copy(update={"url": None})})
    async with AsyncExitStack() as stack:
        _resolved, _embedded, notes = await _start_embedded(
            settings, stack, "auto", tls=True, require_client_cert=True
        )
        [note] = [n for n in notes if n.startswith("MQTT over TLS")]
        match = re.search(r"mqtts://localhost:(\d+)", note)
        assert match is not None
        port = int(match.group(1))
        tls_dir = settings.data_dir / "tls"
        cert, key = tls_dir / "clients" / "device.crt", tls_dir / "clients" / "device.key"
        assert str(cert) in note
        with_cert = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        with_cert.load_cert_chain(str(cert), str(key))
        async with aiomqtt.Client(
            "localhost", port, identifier="tls-device", tls_context=with_cert, timeout=10
        ) as client:
            await client.publish("ghg/v1/city/a/b/c/data", b"{}", qos=1)
        without = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                "localhost", port, identifier="no-cert", tls_context=without, timeout=2
            ):
                pass
