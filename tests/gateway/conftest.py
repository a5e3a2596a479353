"""Fixtures for the HJ 212 gateway tests."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from gw_helpers import loggers

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, start_tansu


@pytest.fixture
def gateway_settings(settings_factory: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings with the test loggers, any free port and fast Kafka retries."""

    def build(kafka: dict[str, Any] | None = None, **gateway: Any) -> Settings:
        section: dict[str, Any] = {"port": 0, "host": "127.0.0.1", "loggers": loggers()}
        section.update(gateway)
        if kafka is not None:
            return settings_factory(gateway=section, kafka=kafka)
        return settings_factory(gateway=section)

    return build


@pytest.fixture
async def own_tansu(tmp_path: Path) -> AsyncIterator[ManagedProcess]:
    """A tansu broker of this test alone, which it may pause (SIGSTOP) and resume."""
    proc = await start_tansu(tmp_path / "own-tansu", port=0)
    try:
        yield proc
    finally:
        if proc.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.proc.send_signal(signal.SIGCONT)
        await proc.stop()
