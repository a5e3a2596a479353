"""Helpers for the registry tests: a private Mosquitto configured by the registry."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from service_helpers import running

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, mosquitto_binary
from ingest import Bridge
from processors import Processor
from registry.brokerconf import find_dynsec_plugin
from registry.dynsec import DynsecClient

ROOT = "ghg/v1"
PIPELINE_DEADLINE_S = 30.0
ALERTS_ROOT = "ghg/v1/alerts"
BRIDGE_USER = "ghgwatch-bridge"
NOTIFIER_USER = "ghgwatch-notifier"
ADMIN_USER = "ghgwatch-admin"

needs_dynsec = pytest.mark.skipif(
    mosquitto_binary() is None or find_dynsec_plugin() is None,
    reason="mosquitto with the dynamic-security plugin is not installed",
)


@contextlib.asynccontextmanager
async def device_client(
    port: int, user: str, password: str, timeout_s: float
) -> AsyncIterator[aiomqtt.Client]:
    """A device's MQTT 5 connection with its username as client id (as the ACL expects)."""
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password, identifier=user,
        protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout_s,
    ) as client:  # fmt: skip
        yield client


async def device_refused(port: int, user: str, password: str, timeout_s: float) -> bool:
    """True when the broker refuses this login."""
    try:
        async with device_client(port, user, password, timeout_s):
            return False
    except aiomqtt.MqttError:
        return True


@dataclass
class Broker:
    """A running private broker and the service passwords it was made with."""

    proc: ManagedProcess
    port: int
    passwords: dict[str, str]
    tls_port: int | None = None

    def dynsec(self) -> DynsecClient:
        """An admin client for its dynamic-security API."""
        return DynsecClient(
            f"mqtt://127.0.0.1:{self.port}", ADMIN_USER, self.passwords[ADMIN_USER], ROOT
        )


def broker_conf(port: int, data: Path, auth: str, extra: str) -> str:
    return (
        f"per_listener_settings false\nlistener {port} 127.0.0.1\n{extra}\n{auth}"
        f"persistence false\npersistence_location {data}/\nuser root\n"
        "log_dest stderr\nlog_type all\n"
    )


async def start_broker(tmp: Path, conf: str, port: int) -> ManagedProcess:
    binary = mosquitto_binary()
    assert binary is not None
    (tmp / "mosquitto.conf").write_text(conf)
    return await ManagedProcess(
        "mosquitto", [binary, "-c", str(tmp / "mosquitto.conf")], "127.0.0.1", port,
        tmp / "mosquitto.log",
    ).start()  # fmt: skip


@contextlib.asynccontextmanager
async def pipeline(settings: Settings) -> AsyncIterator[Bridge]:
    """The bridge and the storing processor, running until the block ends (errors raised)."""
    bridge = Bridge(settings)
    runners = [
        lambda stop: bridge.run(stop=stop),
        lambda stop: Processor(settings).run(stop=stop),
    ]
    async with running(
        bridge,
        runners,
        connect_timeout_s=PIPELINE_DEADLINE_S,
        stop_timeout_s=PIPELINE_DEADLINE_S,
    ):
        yield bridge
