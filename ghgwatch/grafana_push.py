"""``ghgwatch grafana push``: upload the datasources and dashboards to a running Grafana.

The same content Grafana provisions from ``deploy/grafana`` in the compose stack, sent through
Grafana's HTTP API with ``grafana-client``: a folder (``ghgwatch``), the PostgreSQL datasource
(uid ``ghgwatch-pg``, pointed at the database ghgwatch uses or at ``datasource_host``), the
Prometheus datasource when a URL is given (uid ``ghgwatch-prom``), and every dashboard of
:func:`dashboards.build_dashboards`, overwriting earlier versions. Running it again updates in
place: the uids stay, so links and alert annotations keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaBadInputError,
    GrafanaClientError,
    GrafanaServerError,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)

from core.errors import ConfigurationError, GhgwatchError
from core.settings import DetectionSettings
from dashboards import PG_DATASOURCE_UID, PROMETHEUS_DATASOURCE_UID, build_dashboards
from ghgwatch.stack import redact_url

__all__ = [
    "FOLDER_UID",
    "GrafanaPushFailed",
    "PushReport",
    "pg_datasource",
    "prometheus_datasource",
    "push_to_grafana",
]

FOLDER_UID = "ghgwatch"
FOLDER_TITLE = "ghgwatch"
PUSH_TIMEOUT_S = 15.0
_NOT_FOUND = 404


class GrafanaPushFailed(GhgwatchError):
    """Grafana refused or could not take the upload (the message says which part)."""


@dataclass(slots=True)
class PushReport:
    """What was uploaded: ``created`` or ``updated`` per datasource, the dashboards' URLs."""

    grafana_url: str
    folder: str = ""
    datasources: dict[str, str] = field(default_factory=dict)
    dashboards: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per thing uploaded, for the terminal."""
        out = [f"folder {self.folder}"]
        out += [f"datasource {uid}: {what}" for uid, what in self.datasources.items()]
        out += [f"dashboard {uid}: {url}" for uid, url in self.dashboards.items()]
        return out


def pg_datasource(db_url: str, *, host: str | None = None) -> dict[str, Any]:
    """The PostgreSQL datasource for ``db_url`` (``host``: as Grafana reaches the database).

    Raises:
        ConfigurationError: ``db_url`` is not a PostgreSQL URL with a host and a database.
    """
    parts = urlsplit(db_url)
    if parts.scheme not in {"postgresql", "postgres"} or not parts.hostname:
        raise ConfigurationError(f"not a PostgreSQL URL with a host: {parts.scheme}://...")
    database = parts.path.lstrip("/")
    if not database:
        raise ConfigurationError("the database URL names no database")
    address = host or f"{parts.hostname}:{parts.port or 5432}"
    return {
        "uid": PG_DATASOURCE_UID,
        "name": "ghgwatch TimescaleDB",
        "type": "grafana-postgresql-datasource",
        "access": "proxy",
        "isDefault": True,
        "url": address,
        "user": unquote(parts.username or "postgres"),
        "jsonData": {
            "database": database,
            "sslmode": "disable" if parts.hostname in {"127.0.0.1", "localhost"} else "require",
            "postgresVersion": 1500,
            "timescaledb": True,
            "timeInterval": "1m",
        },
        "secureJsonData": {"password": unquote(parts.password or "")},
    }


def prometheus_datasource(url: str) -> dict[str, Any]:
    """The Prometheus datasource the pipeline-health dashboard reads."""
    return {
        "uid": PROMETHEUS_DATASOURCE_UID,
        "name": "ghgwatch Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "jsonData": {"timeInterval": "15s"},
    }


def _status(exc: GrafanaClientError) -> int | None:
    code = getattr(exc, "status_code", None)
    return int(code) if isinstance(code, int) else None


class _Pusher:
    def __init__(self, url: str, token: str | None) -> None:
        self.api = GrafanaApi.from_url(url, credential=token, timeout=PUSH_TIMEOUT_S)

    def folder(self) -> str:
        try:
            self.api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as exc:
            if _status(exc) != _NOT_FOUND:
                raise
            self.api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
            return "created"
        return "exists"

    def datasource(self, ds: dict[str, Any]) -> str:
        uid = str(ds["uid"])
        try:
            self.api.datasource.get_datasource_by_uid(uid)
        except GrafanaClientError as exc:
            if _status(exc) != _NOT_FOUND:
                raise
            self.api.datasource.create_datasource(ds)
            return "created"
        self.api.datasource.update_datasource_by_uid(uid, ds)
        return "updated"

    def dashboard(self, board: dict[str, object]) -> str:
        answer = self.api.dashboard.update_dashboard(
            {
                "dashboard": {**board, "id": None},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "ghgwatch grafana push",
            }
        )
        return str(answer.get("url") or answer.get("uid") or "")


def push_to_grafana(
    grafana_url: str,
    token: str | None,
    db_url: str,
    *,
    datasource_host: str | None = None,
    prometheus_url: str | None = None,
    detection: DetectionSettings | None = None,
) -> PushReport:
    """Upload the folder, the datasources and every dashboard (blocking HTTP calls).

    Args:
        grafana_url: Grafana's base URL (user:password in it, or ``token``).
        token: a service-account token, or None.
        db_url: the database the PostgreSQL datasource reads (its user and password too).
        datasource_host: ``host:port`` of the database as Grafana reaches it, when that is
            not the host in ``db_url`` (Grafana in a container, say).
        prometheus_url: also push the Prometheus datasource, pointed here.
        detection: the detection settings the dashboards draw levels from.

    Raises:
        ConfigurationError: the database URL cannot make a datasource.
        GrafanaPushFailed: Grafana refused a request or could not be reached.
    """
    datasources = [pg_datasource(db_url, host=datasource_host)]
    if prometheus_url:
        datasources.append(prometheus_datasource(prometheus_url))
    boards = build_dashboards(detection)
    report = PushReport(grafana_url=redact_url(grafana_url))
    step = "connect"
    try:
        pusher = _Pusher(grafana_url, token)
        step = "folder"
        report.folder = f"{FOLDER_UID}: {pusher.folder()}"
        for ds in datasources:
            step = f"datasource {ds['uid']}"
            report.datasources[str(ds["uid"])] = pusher.datasource(ds)
        for uid, board in boards.items():
            step = f"dashboard {uid}"
            report.dashboards[uid] = pusher.dashboard(board)
    except (GrafanaUnauthorizedError, GrafanaBadInputError, GrafanaClientError) as exc:
        raise GrafanaPushFailed(f"grafana refused the {step}: {exc}") from exc
    except (
        GrafanaServerError,
        GrafanaTimeoutError,
        niquests.exceptions.RequestException,
        OSError,
    ) as exc:
        raise GrafanaPushFailed(
            f"grafana at {report.grafana_url} failed at the {step}: {type(exc).__name__}: {exc}"
        ) from exc
    return report
