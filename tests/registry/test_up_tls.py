"""``ghgwatch up --tls``: the embedded Mosquitto gets a TLS listener with development certs."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack

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
