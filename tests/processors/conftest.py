"""Fixtures for the storage and processor tests (real tansu + real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.settings import Settings
from processors.storage import migrate


@pytest.fixture
def proc_settings(settings_factory: Callable[..., Settings]) -> Callable[..., Settings]:
    """settings_factory tuned for processor tests: quick rebalances and short pauses."""

    def build(**sections: dict[str, Any]) -> Settings:
        processor = {
            "commit_interval_s": 0.2,
            "session_timeout_ms": 6000,
            "max_poll_interval_ms": 10_000,
            "backpressure_pause_s": 0.2,
            "poll_timeout_ms": 200,
        }
        processor.update(sections.pop("processor", {}))
        # the detector's group is tuned alike (it shared the processor's session settings)
        detection = {"session_timeout_ms": 6000, "max_poll_interval_ms": 10_000}
        detection.update(sections.pop("detection", {}))
        kafka = {"request_timeout_s": 10.0, "linger_ms": 2}
        kafka.update(sections.pop("kafka", {}))
        db = {"command_timeout_s": 5.0}
        db.update(sections.pop("db", {}))
        return settings_factory(
            processor=processor, detection=detection, kafka=kafka, db=db, **sections
        )

    return build


@pytest.fixture
async def migrated(proc_settings: Callable[..., Settings]) -> Settings:
    """Processor-test settings whose database has the schema."""
    settings = proc_settings()
    await migrate(settings.db_url(), settings.db)
    return settings


# the alert tests' capturing HTTP receiver, for detector -> alert service tests
from tests.alerts.conftest import receiver  # noqa: E402, F401
