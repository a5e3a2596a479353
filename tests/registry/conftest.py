"""A private Mosquitto configured by the registry: dynamic-security plugin or files, TLS."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.ports import free_port
from ghgwatch.embedded import ManagedProcess, mosquitto_binary
from registry.acl import BRIDGE_ROLE, NOTIFIER_ROLE
from registry.brokerconf import TlsFiles, auth_lines, find_dynsec_plugin, tls_listener_lines
from registry.dynsec import DynsecClient, initial_config

ROOT = "ghg/v1"
ALERTS_ROOT = "ghg/v1/alerts"
BRIDGE_USER = "ghgwatch-bridge"
NOTIFIER_USER = "ghgwatch-notifier"
ADMIN_USER = "ghgwatch-admin"

needs_dynsec = pytest.mark.skipif(
    mosquitto_binary() is None or find_dynsec_plugin() is None,
    reason="mosquitto with the dynamic-security plugin is not installed",
)


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


def _conf(port: int, data: Path, auth: str, extra: str) -> str:
    return (
        f"per_listener_settings false\nlistener {port} 127.0.0.1\n{extra}\n{auth}"
        f"persistence false\npersistence_location {data}/\nuser root\n"
        "log_dest stderr\nlog_type all\n"
    )


async def _start(tmp: Path, conf: str, port: int) -> ManagedProcess:
    binary = mosquitto_binary()
    assert binary is not None
    (tmp / "mosquitto.conf").write_text(conf)
    return await ManagedProcess(
        "mosquitto", [binary, "-c", str(tmp / "mosquitto.conf")], "127.0.0.1", port,
        tmp / "mosquitto.log",
    ).start()  # fmt: skip


@pytest.fixture
async def dynsec_broker(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Broker]]]:
    """Start Mosquitto with the registry's generated dynamic-security configuration."""
    started: list[ManagedProcess] = []

    async def start(tls: TlsFiles | None = None) -> Broker:
        d = tmp_path / f"dynsec-{len(started)}"
        d.mkdir()
        passwords = {u: secrets.token_urlsafe(16) for u in (ADMIN_USER, BRIDGE_USER, NOTIFIER_USER)}
        config = initial_config(
            admin=(ADMIN_USER, passwords[ADMIN_USER]),
            root=ROOT,
            alerts_root=ALERTS_ROOT,
            clients=[
                (BRIDGE_USER, passwords[BRIDGE_USER], BRIDGE_ROLE),
                (NOTIFIER_USER, passwords[NOTIFIER_USER], NOTIFIER_ROLE),
            ],
        )
        (d / "dynamic-security.json").write_text(json.dumps(config))
        port = free_port(0)
        tls_port = free_port(0) if tls is not None else None
        extra = tls_listener_lines(tls_port, tls) if tls is not None and tls_port else ""
        proc = await _start(
            d, _conf(port, d, auth_lines(dynsec_config=d / "dynamic-security.json"), extra), port
        )
        started.append(proc)
        return Broker(proc, port, passwords, tls_port)

    yield start
    for proc in started:
        await proc.stop()


@pytest.fixture
async def files_broker(tmp_path: Path) -> AsyncIterator[Callable[[Path, Path], Awaitable[Broker]]]:
    """Start Mosquitto with the registry's generated password and ACL files."""
    started: list[ManagedProcess] = []

    async def start(passwd: Path, acl: Path) -> Broker:
        d = tmp_path / f"files-{len(started)}"
        d.mkdir()
        port = free_port(0)
        proc = await _start(
            d, _conf(port, d, auth_lines(password_file=passwd, acl_file=acl), ""), port
        )
        started.append(proc)
        return Broker(proc, port, {})

    yield start
    for proc in started:
        await proc.stop()
