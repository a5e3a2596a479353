"""Password and ACL files for a Mosquitto without the dynamic-security plugin.

The password file is ``mosquitto_passwd``'s format (``username:$7$...``); lines of users
that are not registered devices (the bridges, the notifier, the exporter) are kept as they
are, device lines are written from the registry's hashes (enabled devices only, so a
disabled device cannot log in after the broker reloads). The ACL file is written whole from
:mod:`registry.acl`. Both are replaced atomically, mode 0600. Mosquitto reads them again on
SIGHUP and then drops every connected client whose credentials are gone (a disabled device,
a rotated password): :func:`broker_reloader` sends it (``registry.reload_pid_file``) or runs
the operator's command (``registry.reload_command``, e.g. ``docker compose kill -s HUP
mosquitto``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from core.errors import GhgwatchError
from registry.acl import acl_file_block, bridge_acls, device_acls, notifier_acls
from registry.models import DeviceRecord

__all__ = [
    "BrokerReloadError",
    "acl_file_text",
    "broker_reloader",
    "password_file_text",
    "write_private",
]

_RELOAD_TIMEOUT_S = 30.0


class BrokerReloadError(GhgwatchError):
    """The broker could not be told to reread its password and ACL files."""


def broker_reloader(
    pid_file: Path | None = None,
    command: str | None = None,
    *,
    timeout_s: float = _RELOAD_TIMEOUT_S,
) -> Callable[[], Awaitable[None]] | None:
    """What makes the broker reread its files: SIGHUP to the pid in ``pid_file``, or
    ``command`` (split like a shell line, run without a shell, must exit 0); None for neither.

    The returned coroutine raises :class:`BrokerReloadError` when the broker was not reached.
    """
    if pid_file is not None and command is not None:
        raise ValueError("give pid_file or command, not both")
    if pid_file is not None:
        path = pid_file

        async def hup() -> None:
            try:
                text = path.read_text().strip()
            except OSError as exc:
                raise BrokerReloadError(f"broker pid file {path}: {exc.strerror}") from exc
            try:
                pid = int(text)
            except ValueError:
                raise BrokerReloadError(f"broker pid file {path}: no process id") from None
            if pid <= 1:
                raise BrokerReloadError(f"broker pid file {path}: bad process id {pid}")
            try:
                os.kill(pid, signal.SIGHUP)
            except OSError as exc:
                raise BrokerReloadError(
                    f"SIGHUP to broker pid {pid} (from {path}): {exc.strerror}"
                ) from exc

        return hup
    if command is not None:
        argv = shlex.split(command)
        if not argv:
            raise ValueError("empty reload command")

        async def run() -> None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            except OSError as exc:
                raise BrokerReloadError(f"reload command {command!r}: {exc.strerror}") from exc
            try:
                async with asyncio.timeout(timeout_s):
                    out, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise BrokerReloadError(
                    f"reload command {command!r}: no exit within {timeout_s:g} s"
                ) from None
            if proc.returncode != 0:
                said = out.decode(errors="replace").strip()[-500:]
                raise BrokerReloadError(
                    f"reload command {command!r} exited {proc.returncode}"
                    + (f": {said}" if said else "")
                )

        return run
    return None


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def password_file_text(
    existing: str, device_users: Iterable[str], hashes: Mapping[str, str]
) -> str:
    """The new password file: others' lines kept, device lines from ``hashes``.

    Args:
        existing: the current file's text ("" for none).
        device_users: every registered device's username (enabled or not).
        hashes: username -> hash of the devices that may log in.
    """
    managed = set(device_users) | set(hashes)
    kept = [
        line
        for line in existing.splitlines()
        if line.strip() and line.partition(":")[0] not in managed
    ]
    return "\n".join([*kept, *(f"{u}:{h}" for u, h in sorted(hashes.items()))]) + "\n"


def acl_file_text(
    devices: Iterable[DeviceRecord],
    *,
    root: str,
    alerts_root: str,
    bridge_users: Iterable[str],
    notifier_user: str,
) -> str:
    """The ACL file: a block per bridge, the notifier and each enabled device."""
    parts = ["# Written by `ghgwatch stations`; edits are overwritten.\n"]
    parts += [acl_file_block(user, bridge_acls(root)) for user in bridge_users]
    parts.append(acl_file_block(notifier_user, notifier_acls(alerts_root)))
    parts.append("user mosquitto-exporter\ntopic read $SYS/#\n")
    parts += [
        acl_file_block(d.mqtt_username, device_acls(d, root))
        for d in sorted(devices, key=lambda d: d.device_id)
        if d.enabled
    ]
    return "\n".join(parts)
