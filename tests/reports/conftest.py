"""Fixtures of the report tests that raise alerts: the alert tests' database and services,
and that database holding the five simulated quarters."""

from __future__ import annotations

import asyncpg
import pytest

from tests.alerts.conftest import alert_db, alert_settings, running
from tests.reports import report_sim as simdata

__all__ = ["alert_db", "alert_settings", "running", "sim_url"]


@pytest.fixture
async def sim_url(alert_db: str) -> str:
    """The migrated test database (alert_db) holding the five simulated quarters."""
    conn = await asyncpg.connect(alert_db)
    try:
        await simdata.write(conn, simdata.build())
    finally:
        await conn.close()
    return alert_db
