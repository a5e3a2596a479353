"""First start of the compose broker: write the dynamic-security plugin's file, once.

compose runs this in the one-shot ``broker-init`` service (the ghgwatch image) before
Mosquitto starts:

    python init_dynsec.py FILE USER=ENV_VAR ...

When FILE is missing it is written with the registry's admin (``registry.admin_username``,
password ``GHGWATCH_REGISTRY__ADMIN_PASSWORD``) and one client per ``USER=ENV_VAR``, whose
password is that variable's value: each of ``registry.bridge_users`` (role ghgwatch-bridge),
``registry.notifier_user`` (role ghgwatch-notifier; skipped while its variable is empty) and
``mosquitto-exporter`` (reads ``$SYS`` only: the exporter and the broker's health check). The
roles are those of ``ghgwatch stations init-broker``, so ``ghgwatch stations add`` works on
this broker as on any other.

When FILE exists, nothing is changed: the broker owns it from its first start (it writes every
``stations add``, ``disable`` and ``rotate`` back to it), so a restart keeps every device. To
change a service's password later, use ``mosquitto_ctrl dynsec setClientPassword`` (see
docs/operations.md) and then deploy/.env.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from core.settings import load_settings
from registry.acl import BRIDGE_ROLE, NOTIFIER_ROLE, Acl
from registry.dynsec import _client_entry, _role, initial_config

EXPORTER_USER = "mosquitto-exporter"
EXPORTER_ROLE = "mosquitto-exporter"
EXPORTER_ACLS = [
    Acl("subscribePattern", "$SYS/#"),
    Acl("unsubscribePattern", "$SYS/#"),
    Acl("publishClientReceive", "$SYS/#"),
]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    if out.exists():
        print(f"{out} exists: the broker keeps its registry; nothing changed")
        return 0
    config_file = os.environ.get("GHGWATCH_CONFIG")
    settings = load_settings(Path(config_file) if config_file else None)
    reg = settings.registry
    if reg.admin_password is None or not reg.admin_password.get_secret_value():
        print("error: GHGWATCH_REGISTRY__ADMIN_PASSWORD is not set", file=sys.stderr)
        return 1
    roles = dict.fromkeys(reg.bridge_users, BRIDGE_ROLE)
    roles[reg.notifier_user] = NOTIFIER_ROLE
    roles[EXPORTER_USER] = EXPORTER_ROLE
    clients: list[tuple[str, str, str]] = []
    for pair in argv[1:]:
        user, var = pair.split("=", 1)
        if user not in roles:
            print(
                f"error: {user} is no registry bridge user, notifier or exporter", file=sys.stderr
            )
            return 1
        password = os.environ.get(var, "")
        if not password:
            if user == reg.notifier_user:
                continue  # no MQTT notifier configured yet
            print(f"error: {var} ({user}'s password) is not set", file=sys.stderr)
            return 1
        clients.append((user, password, roles[user]))
    missing = set(reg.bridge_users) - {u for u, _, _ in clients}
    if missing:
        print(f"error: no password given for bridge users {sorted(missing)}", file=sys.stderr)
        return 1
    services = [c for c in clients if c[2] != EXPORTER_ROLE]
    config = initial_config(
        admin=(reg.admin_username, reg.admin_password.get_secret_value()),
        root=settings.mqtt.topic_root,
        alerts_root=settings.alerts.mqtt_topic_root,
        clients=services,
    )
    for user, password, role in clients:
        if role == EXPORTER_ROLE:
            config["clients"].append(_client_entry(user, password, [EXPORTER_ROLE]))
    config["roles"].append(_role(EXPORTER_ROLE, EXPORTER_ACLS))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(out)
    users = ", ".join([reg.admin_username, *(u for u, _, _ in clients)])
    print(f"wrote {out}: {users}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
