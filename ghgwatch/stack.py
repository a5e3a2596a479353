"""Find the services a command talks to: the configured ones, else a running ``ghgwatch up``'s.

Every command that reaches a service (``alerts``, ``db migrate``, ``simulate``, ``status``,
``grafana push`` and the ones other modules add) calls :func:`resolve_settings`: for each
service URL left unset it overlays the address that a live ``ghgwatch up`` wrote to
``data_dir/endpoints.json``, and it prints one line on stderr saying which services it talks
to and where their addresses came from. With no URL configured and no ``up`` running, the
standard local addresses are used and the line says so. The development API token ``up``
writes (``data_dir/api-token``) is overlaid too when no ``alerts.api_tokens`` are configured,
so an API client here authenticates the same way the running API checks.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from adapters.ports import pid_alive
from core.settings import Settings
from ghgwatch.up import DEV_TOKEN_FILE, DEV_TOKEN_NAME, Endpoints, read_endpoints

__all__ = [
    "ALL_SERVICES",
    "Resolved",
    "Service",
    "current_settings",
    "redact_url",
    "resolve",
    "resolve_settings",
    "set_current_settings",
]

Service = Literal["db", "kafka", "mqtt", "api"]
ALL_SERVICES: tuple[Service, ...] = ("db", "kafka", "mqtt")

_CURRENT: dict[str, Settings] = {}


def set_current_settings(settings: Settings) -> None:
    """Remember the settings the CLI loaded (``--config``, environment) for this process."""
    _CURRENT["settings"] = settings


def current_settings() -> Settings:
    """The settings the CLI loaded; the environment's when none were set."""
    found = _CURRENT.get("settings")
    if found is None:
        found = _CURRENT["settings"] = Settings()
    return found


def redact_url(url: str) -> str:
    """A URL with its password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """Settings with the running ``up``'s endpoints filled in, and where each came from."""

    settings: Settings
    source: str
    """config, the running ``up`` (pid), or local defaults (with why)."""
    up: Endpoints | None
    """The live ``up`` whose endpoints were used, if any."""

    def describe(self, uses: Iterable[Service]) -> str:
        """One line: the services used and their addresses (no password)."""
        s = self.settings
        where = {
            "db": f"database {redact_url(s.db_url())}",
            "kafka": f"kafka {s.kafka_bootstrap()}",
            "mqtt": f"mqtt {redact_url(s.mqtt_url())}",
            "api": f"on-call API http://{s.alerts.api_host}:{s.alerts.api_port}",
        }
        return f"ghgwatch: {', '.join(where[u] for u in uses)} (from {self.source})"


def _dev_token(data_dir: Path) -> str | None:
    try:
        token = (data_dir / DEV_TOKEN_FILE).read_text().strip()
    except OSError:
        return None
    return token or None


def resolve(settings: Settings) -> Resolved:
    """Fill unset URLs from a live ``ghgwatch up`` in ``settings.data_dir``, if there is one.

    Args:
        settings: the loaded settings; configured URLs always win.

    Returns:
        The settings to use and a description of where their addresses came from.
    """
    unset = settings.mqtt.url is None or settings.kafka.bootstrap is None or settings.db.url is None
    found = read_endpoints(settings.data_dir)
    if found is not None and not pid_alive(found.pid):
        stale = f"{settings.data_dir}/endpoints.json is stale: `up` (pid {found.pid}) is gone"
        return Resolved(settings, f"local defaults ({stale})" if unset else "config", None)
    if found is None:
        why = f"no `ghgwatch up` running with data dir {settings.data_dir}"
        return Resolved(settings, f"local defaults ({why})" if unset else "config", None)
    resolved = settings.with_endpoints(
        mqtt_url=found.mqtt_url, kafka_bootstrap=found.kafka_bootstrap, db_url=found.db_url
    )
    if found.api_url is not None and found.api_port is not None:
        alerts = resolved.alerts.model_copy(update={"api_port": found.api_port})
        if not alerts.api_tokens and (token := _dev_token(settings.data_dir)) is not None:
            alerts = alerts.model_copy(update={"api_tokens": {DEV_TOKEN_NAME: SecretStr(token)}})
        resolved = resolved.model_copy(update={"alerts": alerts})
    source = f"endpoints.json of `ghgwatch up` (pid {found.pid})" if unset else "config"
    return Resolved(resolved, source, found)


def resolve_settings(
    settings: Settings | None = None,
    *,
    uses: Iterable[Service] = ALL_SERVICES,
    announce: bool = True,
) -> Settings:
    """The settings a command should use, with a running ``up``'s endpoints overlaid.

    Args:
        settings: the loaded settings (default: what the CLI loaded).
        uses: the services the command talks to; only these are named in the line.
        announce: print the one line on stderr.

    Returns:
        The settings; configured URLs are kept, unset ones come from a live ``up``.
    """
    found = resolve(settings if settings is not None else current_settings())
    if announce:
        print(found.describe(tuple(uses)), file=sys.stderr, flush=True)
    return found.settings
