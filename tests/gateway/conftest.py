"""Fixtures for the HJ 212 gateway tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from gw_helpers import loggers

from core.settings import Settings


@pytest.fixture
def gateway_settings(settings_factory: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings with the test loggers, any free port and fast Kafka retries."""

    def build(**gateway: Any) -> Settings:
        section: dict[str, Any] = {"port": 0, "host": "127.0.0.1", "loggers": loggers()}
        section.update(gateway)
        return settings_factory(gateway=section)

    return build
