"""Who may do what on the broker: the one ACL policy, rendered for dynsec and for files.

- A device publishes only on its own data topic (its readings and its last will, which the
  wire contract puts on the data topic: docs/wire-contract.md) and subscribes to and
  receives only its own status topic.
- A bridge reads every topic below the root and writes only status topics.
- The notifier (the alert service's MQTT sirens) writes only below the alerts root.
- Nobody else may do anything: anonymous clients are refused by the broker configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.models import DeviceRecord

__all__ = [
    "ADMIN_ROLE",
    "BRIDGE_ROLE",
    "NOTIFIER_ROLE",
    "Acl",
    "acl_file_block",
    "admin_acls",
    "bridge_acls",
    "device_acls",
    "device_role",
    "notifier_acls",
]

ADMIN_ROLE = "ghgwatch-admin"
BRIDGE_ROLE = "ghgwatch-bridge"
NOTIFIER_ROLE = "ghgwatch-notifier"
_CONTROL = "$CONTROL/dynamic-security/#"


@dataclass(frozen=True, slots=True)
class Acl:
    """One dynamic-security ACL entry (``acltype`` as the plugin names it)."""

    acltype: str
    topic: str
    allow: bool = True

    def as_json(self) -> dict[str, object]:
        """The plugin's JSON form."""
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow}


def device_role(username: str) -> str:
    """The dynamic-security role of one device (one role each: its own topics)."""
    return f"device:{username}"


def device_acls(device: DeviceRecord, root: str) -> list[Acl]:
    """Publish on its own data topic; subscribe to and receive its own status topic."""
    status = device.status_topic(root)
    return [
        Acl("publishClientSend", device.data_topic(root)),
        Acl("subscribeLiteral", status),
        Acl("publishClientReceive", status),
        Acl("unsubscribeLiteral", status),
    ]


def bridge_acls(root: str) -> list[Acl]:
    """Read everything below the root, write status replies only."""
    return [
        Acl("subscribePattern", f"{root}/#"),
        Acl("unsubscribePattern", f"{root}/#"),
        Acl("publishClientReceive", f"{root}/#"),
        Acl("publishClientSend", f"{root}/+/+/+/+/status"),
    ]


def notifier_acls(alerts_root: str) -> list[Acl]:
    """Publish alert messages (sirens, panels) below the alerts root only."""
    return [Acl("publishClientSend", f"{alerts_root}/#")]


def admin_acls() -> list[Acl]:
    """Speak the dynamic-security control topic (the registry's own client)."""
    return [
        Acl("publishClientSend", _CONTROL),
        Acl("publishClientReceive", _CONTROL),
        Acl("subscribePattern", _CONTROL),
        Acl("unsubscribePattern", _CONTROL),
    ]


def acl_file_block(user: str, acls: list[Acl]) -> str:
    """The same rights as a Mosquitto ``acl_file`` block (``read`` covers subscribe+receive)."""
    lines = [f"user {user}"]
    for acl in acls:
        if acl.acltype == "publishClientSend":
            lines.append(f"topic write {acl.topic}")
        elif acl.acltype == "publishClientReceive":
            lines.append(f"topic read {acl.topic}")
    return "\n".join(lines) + "\n"
