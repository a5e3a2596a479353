"""Mosquitto configuration for the registry: dynamic-security plugin, no anonymous, TLS.

The lines here are appended to a listener configuration (``ghgwatch stations init-broker``
writes them, tests and ``up --tls`` use them). Client ids stay bound to usernames
(``use_username_as_clientid``, a per-listener option: on the listener the auth lines follow,
and on every TLS listener written here; see deploy/mosquitto/mosquitto.conf), so no
credential can take over another client's persistent session.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "auth_lines", "find_dynsec_plugin", "tls_listener_lines"]

_PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto/mosquitto_dynamic_security.so",
)


def find_dynsec_plugin() -> Path | None:
    """Where this machine's Mosquitto keeps its dynamic-security plugin (Debian: multiarch)."""
    for pattern in _PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A TLS listener's files (``ghgwatch certs`` writes them)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_client_cert: bool = False


def auth_lines(
    *,
    dynsec_config: Path | None = None,
    plugin: Path | None = None,
    password_file: Path | None = None,
    acl_file: Path | None = None,
) -> str:
    """Authentication and authorisation: the plugin, or password and ACL files.

    Raises:
        ValueError: neither (or both) given, or the plugin is not installed.
    """
    if (dynsec_config is None) == (password_file is None):
        raise ValueError("give either dynsec_config or password_file (with acl_file)")
    lines = ["allow_anonymous false", "use_username_as_clientid true"]
    if dynsec_config is not None:
        plugin = plugin or find_dynsec_plugin()
        if plugin is None:
            raise ValueError("mosquitto_dynamic_security.so not found; install mosquitto 2.0")
        lines += [f"plugin {plugin}", f"plugin_opt_config_file {dynsec_config}"]
    else:
        assert password_file is not None
        lines.append(f"password_file {password_file}")
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


def tls_listener_lines(
    port: int, tls: TlsFiles, bind: str = "127.0.0.1", *, username_as_clientid: bool = True
) -> str:
    """A TLS listener (MQTT over TLS 1.2+, usually 8883); client certificates optional.

    ``use_username_as_clientid`` is a listener option in Mosquitto 2.0 (the one in
    :func:`auth_lines` binds only the listener it follows), so the TLS listener gets its own.
    ``username_as_clientid=False`` leaves it out, for a listener that admits anonymous
    clients (Mosquitto refuses a client with no username there).
    """
    lines = [
        f"listener {port} {bind}",
        f"cafile {tls.cafile}",
        f"certfile {tls.certfile}",
        f"keyfile {tls.keyfile}",
        "tls_version tlsv1.2",
        f"require_certificate {'true' if tls.require_client_cert else 'false'}",
    ]
    if username_as_clientid:
        lines.append("use_username_as_clientid true")
    return "\n".join(lines) + "\n"
