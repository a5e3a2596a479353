"""Password and ACL files for a Mosquitto without the dynamic-security plugin.

The password file is ``mosquitto_passwd``'s format (``username:$7$...``); lines of users
that are not registered devices (the bridges, the notifier, the exporter) are kept as they
are, device lines are written from the registry's hashes (enabled devices only, so a
disabled device cannot log in after the broker reloads). The ACL file is written whole from
:mod:`registry.acl`. Both are replaced atomically, mode 0600. Mosquitto reads them again on
SIGHUP (``kill -HUP``, or ``docker compose kill -s HUP mosquitto``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from registry.acl import acl_file_block, bridge_acls, device_acls, notifier_acls
from registry.models import DeviceRecord

__all__ = ["acl_file_text", "password_file_text", "write_private"]


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
