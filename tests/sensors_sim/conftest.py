"""Fixtures for the simulator tests: settings on the machine's Mosquitto with a private root."""

from __future__ import annotations

import os

import pytest

from core.settings import Settings

SIM_TEST_MQTT_URL = os.environ.get("GHGWATCH_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture
def sim_settings(test_id: str) -> Settings:
    """Settings on the real Mosquitto with a topic root no other test uses."""
    return Settings(
        mqtt={"url": SIM_TEST_MQTT_URL, "topic_root": f"s{test_id}/v1"},
        metrics={"enabled": False},
    )
