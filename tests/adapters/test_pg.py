"""Waiting for PostgreSQL at start (adapters.pg) against a port where nothing listens."""

from __future__ import annotations

import pytest
import structlog

from adapters import free_port, redact_url, wait_for_database
from core.errors import FatalError, StorageBackpressure
from tests.conftest import TEST_PG_URL

PASSWORD = "pg-pa55word-never-logged"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{PASSWORD}@db:5432/ghg", "postgresql://app:***@db:5432/ghg"),
        ("postgresql://app@db:5432/ghg", "postgresql://app@db:5432/ghg"),
        ("postgresql://app:p%40ss@db/ghg", "postgresql://app:***@db/ghg"),
        ("postgresql://app:x@db:notaport/ghg", "postgresql://app:***@db:notaport/ghg"),
    ],
)
def test_redact_url_masks_the_password(url: str, shown: str) -> None:
    """The password, raw or percent-encoded, never survives; the rest stays readable."""
    assert redact_url(url) == shown


async def test_wait_for_database_retries_then_gives_up_after_its_deadline() -> None:
    """Nothing listening: each retry is logged without the password, then
    StorageBackpressure after the deadline, its message without the password either."""
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
    with structlog.testing.capture_logs() as logs, pytest.raises(StorageBackpressure) as info:
        await wait_for_database(url, timeout_s=1.0, first_delay_s=0.05, max_delay_s=0.2)
    retries = [e for e in logs if e["event"] == "waiting for the database"]
    assert len(retries) >= 2
    assert all(PASSWORD not in repr(e) for e in logs)
    assert PASSWORD not in str(info.value)
    assert "***" in str(info.value)


async def test_wait_for_database_returns_when_the_server_answers() -> None:
    """A reachable database: returns at once."""
    await wait_for_database(TEST_PG_URL, timeout_s=10.0)


async def test_wait_for_database_stops_on_refused_credentials_without_echoing_them() -> None:
    """A role that does not exist (SQLSTATE 28): FatalError at once, no retry."""
    base = TEST_PG_URL.split("://", 1)[1].rpartition("@")[2]
    url = f"postgresql://no_such_role_x:{PASSWORD}@{base}"
    with pytest.raises(FatalError) as info:
        await wait_for_database(url, timeout_s=10.0, first_delay_s=5.0)
    assert PASSWORD not in str(info.value)
