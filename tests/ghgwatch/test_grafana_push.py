"""`ghgwatch grafana push` against a real local HTTP server speaking Grafana's API.

No Grafana server runs here; this one implements the endpoints the push uses (folders,
datasources by uid, dashboards/db), keeps what it was sent, and records every request, so
the test checks the payloads Grafana would get and that a second push updates in place.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from dashboards import DASHBOARD_UIDS
from ghgwatch.cli import app
from ghgwatch.grafana_push import GrafanaPushFailed, push_to_grafana

TOKEN = "glsa_push_test"


@dataclass
class FakeGrafana:
    """State and request log of the fake; ``refuse`` makes every request answer 401."""

    port: int = 0
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    refuse: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if self.refuse:
            return 401, {"message": "invalid API key"}
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            return (200, self.folders[uid]) if uid in self.folders else (404, {"message": "nf"})
        if method == "POST" and path == "/api/folders":
            self.folders[body["uid"]] = body
            return 200, {"uid": body["uid"], "title": body["title"]}
        if path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            if method == "GET":
                found = self.datasources.get(uid)
                return (200, found) if found else (404, {"message": "Data source not found"})
            if method == "PUT" and uid in self.datasources:
                self.datasources[uid] = body
                return 200, {"message": "Datasource updated"}
        if method == "POST" and path == "/api/datasources":
            self.datasources[body["uid"]] = body
            return 200, {"message": "Datasource added", "id": len(self.datasources)}
        if method == "POST" and path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            self.dashboards[uid] = body
            return 200, {"uid": uid, "url": f"/d/{uid}/x", "status": "success"}
        return 404, {"message": f"no route {method} {path}"}


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length", 0))
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            with lock:
                fake.requests.append(
                    (self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, answer = fake.answer(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _handle  # noqa: N815 - http.server's naming
        do_POST = _handle  # noqa: N815
        do_PUT = _handle  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


DB_URL = "postgresql://grafana_reader:s3cret@db.internal:6432/ghgwatch"


def test_push_uploads_folder_datasources_and_every_dashboard_then_updates_in_place(
    grafana: FakeGrafana,
) -> None:
    """The first push creates the folder and both datasources and posts every dashboard with
    overwrite into the folder; the second updates the datasources and posts again."""
    first = push_to_grafana(
        grafana.url,
        TOKEN,
        DB_URL,
        datasource_host="timescaledb:5432",
        prometheus_url="http://prometheus:9090",
    )
    assert first.datasources == {"ghgwatch-pg": "created", "ghgwatch-prom": "created"}
    assert first.folder == "ghgwatch: created"
    assert set(first.dashboards) == set(DASHBOARD_UIDS)
    assert all(
        headers["authorization"] == f"Bearer {TOKEN}" for _m, _p, headers, _b in grafana.requests
    )

    pg = grafana.datasources["ghgwatch-pg"]
    assert pg["type"] == "grafana-postgresql-datasource"
    assert pg["url"] == "timescaledb:5432"
    assert pg["user"] == "grafana_reader"
    assert pg["jsonData"]["database"] == "ghgwatch"
    assert pg["jsonData"]["timescaledb"] is True
    assert pg["secureJsonData"] == {"password": "s3cret"}
    assert grafana.datasources["ghgwatch-prom"]["url"] == "http://prometheus:9090"
    for uid in DASHBOARD_UIDS:
        posted = grafana.dashboards[uid]
        assert posted["overwrite"] is True
        assert posted["folderUid"] == "ghgwatch"
        assert posted["dashboard"]["uid"] == uid
        assert posted["dashboard"]["id"] is None
        assert posted["dashboard"]["panels"]
    region = grafana.dashboards["ghgwatch-region"]["dashboard"]
    assert any(p["type"] == "geomap" for p in region["panels"])

    posts_before = len([r for r in grafana.requests if r[1] == "/api/dashboards/db"])
    second = push_to_grafana(grafana.url, TOKEN, DB_URL)
    assert second.datasources == {"ghgwatch-pg": "updated"}
    assert second.folder == "ghgwatch: exists"
    puts = [r for r in grafana.requests if r[0] == "PUT"]
    assert [p[1] for p in puts] == ["/api/datasources/uid/ghgwatch-pg"]
    assert puts[0][3]["url"] == "db.internal:6432"  # no override: the URL's own host
    assert len([r for r in grafana.requests if r[1] == "/api/dashboards/db"]) == 2 * posts_before


def test_a_refusing_grafana_is_a_clear_error_without_the_password(grafana: FakeGrafana) -> None:
    """401 from Grafana names the step that failed and never echoes the URL's password."""
    grafana.refuse = True
    with pytest.raises(GrafanaPushFailed, match="refused the folder") as info:
        push_to_grafana(f"http://admin:hunter2@127.0.0.1:{grafana.port}", None, DB_URL)
    assert "hunter2" not in str(info.value)


def test_cli_push_uses_the_configured_grafana_and_database(grafana: FakeGrafana) -> None:
    """`ghgwatch grafana push` reads alerts.grafana_url/token and the database URL."""
    result = CliRunner().invoke(
        app,
        ["grafana", "push"],
        env={
            "GHGWATCH_ALERTS__GRAFANA_URL": grafana.url,
            "GHGWATCH_ALERTS__GRAFANA_TOKEN": TOKEN,
            "GHGWATCH_DB__URL": DB_URL,
        },
    )
    assert result.exit_code == 0, result.output
    assert f"pushed to {grafana.url}" in result.output
    assert "datasource ghgwatch-pg: created" in result.output
    assert "s3cret" not in result.output
    assert set(grafana.dashboards) == set(DASHBOARD_UIDS)
