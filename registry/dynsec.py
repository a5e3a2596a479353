"""Mosquitto's dynamic-security plugin: its first configuration, and a client for its API.

Changes go to a running broker as JSON commands on ``$CONTROL/dynamic-security/v1`` over
MQTT (aiomqtt), answered on ``.../response``. Chosen over shelling out to ``mosquitto_ctrl``
because it needs nothing installed where ``ghgwatch stations`` runs, reaches the broker over
the same URL and TLS as every service, sends a device's role and client in one command list,
and reads each command's own error back. The plugin applies a change at once without
restarting the broker or touching other connections; ``disableClient`` and
``deleteClient`` disconnect the device's live connection, and a new password does too (see
:meth:`DynsecClient.rotate`).

The first configuration (:func:`initial_config`) holds the admin client and the roles; the
broker writes the file back itself after every change.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import ssl
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Any

import aiomqtt

from core.errors import ConfigurationError, GhgwatchError
from registry.acl import (
    ADMIN_ROLE,
    BRIDGE_ROLE,
    NOTIFIER_ROLE,
    Acl,
    admin_acls,
    bridge_acls,
    device_acls,
    device_role,
    notifier_acls,
)
from registry.models import DeviceRecord

__all__ = [
    "CONTROL_TOPIC",
    "DYNSEC_ITERATIONS",
    "DynsecClient",
    "DynsecError",
    "initial_config",
]

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
DYNSEC_ITERATIONS = 1_000
_SALT_BYTES = 12


class DynsecError(GhgwatchError):
    """The broker refused a dynamic-security command, or did not answer."""


def _client_entry(username: str, password: str, roles: Sequence[str]) -> dict[str, Any]:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, DYNSEC_ITERATIONS)
    return {
        "username": username,
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": DYNSEC_ITERATIONS,
        "roles": [{"rolename": r} for r in roles],
    }


def _role(name: str, acls: list[Acl]) -> dict[str, Any]:
    return {"rolename": name, "acls": [a.as_json() for a in acls]}


def initial_config(
    *, admin: tuple[str, str], root: str, alerts_root: str, clients: Sequence[tuple[str, str, str]]
) -> dict[str, Any]:
    """The plugin's first ``dynamic-security.json``.

    Args:
        admin: (username, password) of the registry's admin client.
        root: the wire topic root (``ghg/v1``).
        alerts_root: the alert service's MQTT topic root.
        clients: (username, password, role) of the services: each bridge and the notifier.

    Everything not granted is refused: default access denies publishing, receiving and
    subscribing, so a client without a role can do nothing.
    """
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": False,
        },
        "clients": [_client_entry(*admin, [ADMIN_ROLE])]
        + [_client_entry(u, p, [r]) for u, p, r in clients],
        "groups": [],
        "roles": [
            _role(ADMIN_ROLE, admin_acls()),
            _role(BRIDGE_ROLE, bridge_acls(root)),
            _role(NOTIFIER_ROLE, notifier_acls(alerts_root)),
        ],
    }


def _endpoint(url: str) -> tuple[str, int, ssl.SSLContext | None]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"} or not parts.hostname:
        raise ConfigurationError(f"broker URL must be mqtt://host:port or mqtts://host:port: {url}")
    tls = parts.scheme in {"mqtts", "ssl"}
    port = parts.port or (8883 if tls else 1883)
    return parts.hostname, port, ssl.create_default_context() if tls else None


class DynsecClient:
    """Registry changes on a running Mosquitto with the dynamic-security plugin.

    Use as ``async with DynsecClient(url, username, password, root) as dynsec:``.

    Args:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (the CA from ``SSL_CERT_FILE``).
        username: the admin client (role ``ghgwatch-admin``).
        password: its password.
        root: the wire topic root the device ACLs are written for.
        timeout_s: how long one command list may wait for its answer.
    """

    def __init__(
        self, url: str, username: str, password: str, root: str, *, timeout_s: float = 10.0
    ) -> None:
        host, port, tls = _endpoint(url)
        self._root = root
        self._timeout_s = timeout_s
        self._client = aiomqtt.Client(
            host,
            port,
            username=username,
            password=password,
            identifier=f"{username}-{uuid.uuid4().hex[:8]}",
            tls_context=tls,
            timeout=timeout_s,
        )
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DynsecClient:
        try:
            await self._client.__aenter__()
            await self._client.subscribe(RESPONSE_TOPIC, qos=1)
        except aiomqtt.MqttError as exc:
            raise DynsecError(f"cannot reach the broker's dynamic-security API: {exc}") from exc
        self._reader = asyncio.create_task(self._read(), name="dynsec-responses")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._client.messages:
            try:
                body = json.loads(bytes(message.payload))
            except (TypeError, ValueError):
                continue
            for response in body.get("responses", []):
                future = self._pending.pop(str(response.get("correlationData")), None)
                if future is not None and not future.done():
                    future.set_result(response)

    async def run(
        self, commands: list[dict[str, Any]], *, ignore: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """Send commands in one message; return their responses in order.

        Args:
            commands: plugin commands (``{"command": "createClient", ...}``).
            ignore: error texts that are not failures (e.g. ``"Client not found"``).

        Raises:
            DynsecError: a command failed or the broker did not answer in time.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[dict[str, Any]]] = []
        for command in commands:
            key = uuid.uuid4().hex
            command["correlationData"] = key
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            self._pending[key] = future
            futures.append(future)
        try:
            await self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
            async with asyncio.timeout(self._timeout_s):
                responses = list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            raise DynsecError(
                "no answer from the dynamic-security plugin (is it loaded, and may"
                " this user speak $CONTROL/dynamic-security?)"
            ) from exc
        except aiomqtt.MqttError as exc:
            raise DynsecError(f"broker connection failed: {exc}") from exc
        finally:
            for command in commands:
                self._pending.pop(str(command["correlationData"]), None)
        for command, response in zip(commands, responses, strict=True):
            error = response.get("error")
            if error and error not in ignore:
                raise DynsecError(f"{command['command']} refused by the broker: {error}")
        return responses

    async def add_device(self, device: DeviceRecord, password: str) -> None:
        """Create the device's role (its own topics) and its client with that password."""
        username = device.mqtt_username
        role = device_role(username)
        await self.run(
            [
                {
                    "command": "createRole",
                    "rolename": role,
                    "acls": [a.as_json() for a in device_acls(device, self._root)],
                },
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "textname": device.device_id,
                    "roles": [{"rolename": role}],
                },
            ]
        )
        if not device.enabled:
            await self.set_enabled(device, enabled=False)

    async def set_enabled(self, device: DeviceRecord, *, enabled: bool) -> None:
        """Enable or disable the device's client; disabling drops its connection at once."""
        command = "enableClient" if enabled else "disableClient"
        await self.run([{"command": command, "username": device.mqtt_username}])

    async def rotate(self, device: DeviceRecord, password: str) -> None:
        """Give the device a new password; its live connection (old password) is dropped.

        The client is disabled (which disconnects it on every 2.0 release), given the new
        password, then enabled again (if it was), so the cut-off does not depend on whether
        this plugin version kicks clients on a password change.
        """
        username = device.mqtt_username
        commands: list[dict[str, Any]] = [
            {"command": "disableClient", "username": username},
            {"command": "setClientPassword", "username": username, "password": password},
        ]
        if device.enabled:
            commands.append({"command": "enableClient", "username": username})
        await self.run(commands)

    async def remove_device(self, device: DeviceRecord) -> None:
        """Delete the device's client and role (disconnecting it)."""
        username = device.mqtt_username
        await self.run(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": device_role(username)},
            ],
            ignore=frozenset({"Client not found", "Role not found"}),
        )
