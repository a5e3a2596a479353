"""The on-call HTTP API on a real uvicorn server over the real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.ports import free_port
from alerts import AlertApi, AlertStore
from core.settings import Settings
from tests.alerts.conftest import det
from wire.events import Severity

TOKEN = "s3cret-token-for-zhang"


@dataclass
class Api:
    """A running API, a client that authenticates, and the store behind it."""

    client: httpx.AsyncClient
    anon: httpx.AsyncClient
    store: AlertStore
    url: str


@pytest.fixture
async def api(alert_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    """Start the API on a free port with one token (name: zhang.wei)."""
    s = alert_settings(api_tokens={"zhang.wei": TOKEN}, escalate_after_s=300.0)
    server = AlertApi(s, port=free_port())
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop=stop))
    async with asyncio.timeout(20):
        await server.started.wait()
    try:
        async with (
            AlertStore(s.db_url(), s.alerts, s.db) as store,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as client,
            httpx.AsyncClient(base_url=server.url, timeout=10) as anon,
        ):
            yield Api(client, anon, store, server.url)
    finally:
        stop.set()
        async with asyncio.timeout(20):
            await task


async def one_alert(api: Api, **kw: Any) -> int:
    await api.store.apply_detections([det(**kw)], datetime.now(UTC))
    (alert,) = (await api.client.get("/alerts")).json()
    return int(alert["alert_id"])


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong-token", "wrong-scheme"],
)
async def test_api_refuses_requests_without_a_valid_token(
    api: Api, headers: dict[str, str]
) -> None:
    """No token, a wrong token or a non-bearer scheme: 401 with WWW-Authenticate."""
    alert_id = await one_alert(api)
    for method, path in [
        ("GET", "/alerts"),
        ("GET", f"/alerts/{alert_id}"),
        ("POST", f"/alerts/{alert_id}/ack"),
        ("POST", f"/alerts/{alert_id}/resolve"),
        ("POST", f"/alerts/{alert_id}/silence"),
        ("GET", "/silences"),
    ]:
        resp = await api.anon.request(method, path, headers=headers)
        assert resp.status_code == 401, (method, path)
        assert resp.headers["www-authenticate"].startswith("Bearer")
    (alert,) = (await api.client.get("/alerts")).json()
    assert alert["state"] == "open"  # nothing changed


async def test_health_and_openapi_docs_are_served(api: Api) -> None:
    """/healthz needs no token; the OpenAPI document lists the on-call routes."""
    assert (await api.anon.get("/healthz")).json() == {"status": "ok"}
    spec = (await api.anon.get("/openapi.json")).json()
    assert {"/alerts", "/alerts/{alert_id}", "/alerts/{alert_id}/ack", "/silences"} <= set(
        spec["paths"]
    )
    assert (await api.anon.get("/docs")).status_code == 200


async def test_list_filters_and_show_history(api: Api) -> None:
    """List filters by severity and site; show returns detections, history, notifications."""
    await api.store.apply_detections(
        [
            det(device="im/a/t1"),
            det(device="im/b/t1", detector="anomaly", severity=Severity.WARNING),
        ],
        datetime.now(UTC),
    )
    crit = (await api.client.get("/alerts", params={"severity": "critical"})).json()
    assert [a["site"] for a in crit] == ["a"]
    assert [a["site"] for a in (await api.client.get("/alerts?site=b")).json()] == ["b"]
    detail = (await api.client.get(f"/alerts/{crit[0]['alert_id']}")).json()
    assert detail["alert"]["device_id"] == "im/a/t1"
    assert [e["event"] for e in detail["events"]] == ["opened"]
    assert len(detail["detections"]) == 1


async def test_acknowledge_records_who_and_stops_escalation(api: Api) -> None:
    """POST ack: state acknowledged, actor from the body or the token name, no escalation."""
    alert_id = await one_alert(api)
    resp = await api.client.post(f"/alerts/{alert_id}/ack", json={"note": "on my way"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["state"] == "acknowledged"
    assert body["acknowledged_by"] == "zhang.wei"
    assert body["next_escalation_at"] is None
    sweep = await api.store.sweep(datetime.now(UTC) + timedelta(hours=2))
    assert sweep.escalated == 0
    again = await api.client.post(f"/alerts/{alert_id}/ack", json={"by": "li.na"})
    assert again.status_code == 409
    assert "already acknowledged" in again.json()["detail"]


async def test_resolve_and_silence(api: Api) -> None:
    """Resolve by hand; silencing a resolved alert is a 409; silence an active one: 201."""
    alert_id = await one_alert(api)
    resp = await api.client.post(f"/alerts/{alert_id}/resolve", json={"by": "li.na"})
    assert resp.json()["resolved_by"] == "li.na"
    assert (await api.client.post(f"/alerts/{alert_id}/silence")).status_code == 409
    other = await _one_alert_at(api, "im/c/t1")
    resp = await api.client.post(
        f"/alerts/{other}/silence", json={"duration_s": 600, "reason": "known leak, crew on site"}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["site"] == "c"
    silences = (await api.client.get("/silences")).json()
    assert [s["reason"] for s in silences] == ["known leak, crew on site"]
    ended = await api.client.delete(f"/silences/{silences[0]['silence_id']}")
    assert ended.status_code == 200
    assert (await api.client.get("/silences")).json() == []


async def _one_alert_at(api: Api, device: str) -> int:
    await api.store.apply_detections([det(device=device)], datetime.now(UTC))
    alerts = (await api.client.get("/alerts", params={"active": "true"})).json()
    return int(next(a["alert_id"] for a in alerts if a["device_id"] == device))


async def test_maintenance_window_can_be_created(api: Api) -> None:
    """POST /silences creates a maintenance window for a site."""
    now = datetime.now(UTC)
    resp = await api.client.post(
        "/silences",
        json={
            "kind": "maintenance",
            "network": "im",
            "site": "shendong-3",
            "ends_at": (now + timedelta(hours=2)).isoformat(),
            "reason": "CH4 sensor calibration (every 15 days)",
        },
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["created_by"] == "zhang.wei"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/alerts/999999", None, 404),
        ("POST", "/alerts/999999/ack", {}, 404),
        ("GET", "/alerts/abc", None, 422),
        ("GET", "/alerts?severity=apocalyptic", None, 422),
        ("GET", "/alerts?limit=0", None, 422),
        ("POST", "/silences", {"reason": "x", "ends_at": "2030-01-01T00:00:00Z"}, 422),
        ("POST", "/silences", {"site": "s", "reason": "x", "ends_at": "2030-01-01T00:00:00"}, 422),
        ("POST", "/alerts/1/silence", {"duration_s": -5}, 422),
        ("DELETE", "/silences/424242", None, 404),
    ],
)
async def test_bad_requests_get_clear_4xx_errors(
    api: Api, method: str, path: str, body: Any, status: int
) -> None:
    """Unknown ids are 404, malformed input 422, each with a readable detail."""
    resp = await api.client.request(method, path, json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"]


async def test_api_on_a_taken_port_is_a_configuration_error(
    alert_settings: Callable[..., Settings],
) -> None:
    """Starting the API on a port already in use fails with a clear ConfigurationError."""
    import socket

    from core.errors import ConfigurationError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigurationError, match="in use"):
            await AlertApi(alert_settings(), port=port).run(timeout_s=1)
