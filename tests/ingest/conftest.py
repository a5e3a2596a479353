"""Fixtures for the ingest tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.settings import Settings


@pytest.fixture
def fast_settings(settings_factory: Callable[..., Settings]) -> Callable[..., Settings]:
    """settings_factory with short reconnect and request timeouts (tests restart brokers)."""

    def build(**sections: dict[str, Any]) -> Settings:
        mqtt = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "connect_timeout_s": 3.0}
        mqtt.update(sections.pop("mqtt", {}))
        kafka = {"request_timeout_s": 3.0, "linger_ms": 2}
        kafka.update(sections.pop("kafka", {}))
        return settings_factory(mqtt=mqtt, kafka=kafka, **sections)

    return build
