"""Fixtures for the registry tests: private brokers from the registry's generated config."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from registry_helpers import (
    ADMIN_USER,
    ALERTS_ROOT,
    BRIDGE_USER,
    NOTIFIER_USER,
    ROOT,
    Broker,
    broker_conf,
    start_broker,
)

from adapters.ports import free_port
from ghgwatch.embedded import ManagedProcess
from registry.acl import BRIDGE_ROLE, NOTIFIER_ROLE
from registry.brokerconf import TlsFiles, auth_lines, tls_listener_lines
from registry.dynsec import initial_config


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
        # the TLS listener after the auth lines, as `up --tls` and an operator appending one
        # write it: the listener's own options are in its lines
        auth = auth_lines(dynsec_config=d / "dynamic-security.json")
        if tls is not None and tls_port:
            auth += tls_listener_lines(tls_port, tls)
        proc = await start_broker(d, broker_conf(port, d, auth, ""), port)
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
        proc = await start_broker(
            d, broker_conf(port, d, auth_lines(password_file=passwd, acl_file=acl), ""), port
        )
        started.append(proc)
        return Broker(proc, port, {})

    yield start
    for proc in started:
        await proc.stop()
