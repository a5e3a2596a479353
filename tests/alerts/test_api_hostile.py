"""The on-call API against hostile requests: schemathesis, bounds, oversized bodies, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hyp_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from adapters import free_port
from core.settings import DbSettings
from processors.storage import migrate
from tests.alerts.test_api import TOKEN, Api, api, one_alert
from tests.conftest import TEST_PG_URL

__all__ = ["api"]  # the fixture, re-used from test_api

# Enough examples per operation and mode to find what the 573-case run found, while the
# whole run stays well under a minute on a shared machine.
SCHEMATHESIS_EXAMPLES = 40
BIGINT_MAX = 2**63 - 1
BIG_BODY_BYTES = 300 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
RSS_GROWTH_LIMIT_BYTES = 50 * 1024 * 1024
START_WAIT_S = 60.0
HTTP_TIMEOUT_S = 10.0
POLL_S = 0.1
DB_PASSWORD = "pg-pa55word-never-logged"


def _run_schemathesis(base_url: str) -> list[str]:
    """Run every operation (positive and negative data) and return the failures found."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        for result in schema.get_all_operations():
            if isinstance(result, Err):  # an operation the document describes wrongly
                failures.append(f"invalid operation in the OpenAPI document: {result.err()}")
                continue
            failures.extend(_run_operation(client, result.ok(), base_url, auth))
    return failures


def _send(client: httpx.Client, kw: dict[str, Any]) -> httpx.Response:
    """Send schemathesis' request arguments with httpx.

    schemathesis' own ``requests`` transport counts pooled connections through urllib3
    internals that urllib3-future (pulled in by grafana-client) replaces, so it fails.
    """
    body: dict[str, Any] = {}
    if "json" in kw:
        body["json"] = kw["json"]
    elif isinstance(kw.get("data"), bytes | str):
        body["content"] = kw["data"]
    elif kw.get("data") is not None:
        body["data"] = kw["data"]
    return client.request(
        kw["method"],
        kw["url"],
        params=kw.get("params"),
        headers=kw.get("headers"),
        **body,
    )


def _run_operation(client: httpx.Client, op: Any, base_url: str, auth: dict[str, str]) -> list[str]:
    """Positive and negative examples of one operation; the failures found."""
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @hyp_settings(
            max_examples=SCHEMATHESIS_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case: Any) -> None:
            kw = case.as_transport_kwargs(base_url=base_url)
            resp = _send(client, {**kw, "headers": {**(kw.get("headers") or {}), **auth}})
            case.validate_response(
                resp,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    response_schema_conformance,
                ],
            )

        try:
            check()
        except Unsatisfiable:  # no invalid request exists (an operation without inputs)
            continue
        except Exception as exc:
            failures.append(f"{op.label} [{mode}]: {exc}"[:3000])
    return failures


async def test_schemathesis_finds_no_server_error_and_no_undocumented_status(api: Api) -> None:
    """Generated requests (valid token): no 5xx, every status and body as documented."""
    failures = await asyncio.to_thread(_run_schemathesis, api.url)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize(
    "path",
    [
        f"/alerts/{BIGINT_MAX + 1}",
        f"/alerts/{2**64}",
        "/alerts/0",
        "/alerts/-1",
        "/alerts?network=a%00b",
        "/alerts?site=a%00b",
        "/alerts?kind=" + "x" * 10_000,
    ],
)
async def test_out_of_range_ids_and_hostile_filters_are_422(api: Api, path: str) -> None:
    """Ids outside PostgreSQL bigint, NUL in a filter and huge filters: 422, never 500."""
    resp = await api.client.get(path)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/alerts/{BIGINT_MAX + 1}/ack"),
        ("POST", f"/alerts/{BIGINT_MAX + 1}/resolve"),
        ("POST", f"/alerts/{BIGINT_MAX + 1}/silence"),
        ("DELETE", f"/silences/{BIGINT_MAX + 1}"),
    ],
)
async def test_out_of_range_ids_in_writes_are_422(api: Api, method: str, path: str) -> None:
    """A write naming an id beyond bigint is refused as input, not a server error."""
    resp = await api.client.request(method, path)
    assert resp.status_code == 422, resp.text


async def test_the_largest_bigint_id_is_simply_not_found(api: Api) -> None:
    """2^63-1 is a valid id that does not exist: 404."""
    assert (await api.client.get(f"/alerts/{BIGINT_MAX}")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"site": "a\u0000b", "reason": "x", "ends_at": "2030-01-01T00:00:00Z"},
        {"site": "s", "reason": "\ud800", "ends_at": "2030-01-01T00:00:00Z"},
        {"site": "s" * 10_000, "reason": "x", "ends_at": "2030-01-01T00:00:00Z"},
        {"site": "s", "reason": "x", "ends_at": "2001-01-01T00:00:00Z"},
    ],
    ids=["nul", "lone-surrogate", "too-long", "ends-before-now"],
)
async def test_hostile_strings_in_bodies_are_422(api: Api, body: dict[str, Any]) -> None:
    """NUL, a lone surrogate, an overlong field or an end already past: 422, nothing stored."""
    # json.dumps escapes a lone surrogate as \\ud800, as a hostile client would send it.
    resp = await api.client.post(
        "/silences", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422, resp.text
    assert (await api.client.get("/silences")).json() == []


async def test_ack_note_with_nul_is_422(api: Api) -> None:
    """A note the database could not store is refused before it reaches the database."""
    alert_id = await one_alert(api)
    resp = await api.client.post(f"/alerts/{alert_id}/ack", json={"note": "on\u0000way"})
    assert resp.status_code == 422, resp.text


async def test_a_body_over_the_limit_is_413_even_with_a_token(api: Api) -> None:
    """A declared or streamed body beyond the limit is refused with 413."""
    big = b"{" + b" " * (200 * 1024) + b"}"
    resp = await api.client.post(
        "/silences", content=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413, resp.text

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 8192

    resp = await api.client.post(
        "/silences", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413, resp.text


# --- the API as its own process: `ghgwatch api` -------------------------------------------


@dataclass
class ApiProcess:
    """A `ghgwatch api` subprocess, its URL and its log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """The process' resident set size."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")  # pragma: no cover


def _with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    user_host, _, db = rest.partition("/")
    user, _, host = user_host.rpartition("@")
    return f"{scheme}://{user or 'postgres'}:{password}@{host}/{db}"


@contextlib.contextmanager
def _ghgwatch_api(db_url: str, tmp_path: Path, *, token: str = TOKEN) -> Iterator[ApiProcess]:
    """Start ``ghgwatch api`` on a free port with one token; stop it (SIGTERM) after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(
        {
            "GHGWATCH_DB__URL": db_url,
            "GHGWATCH_ALERTS__API_TOKENS": json.dumps({"zhang.wei": token}),
            "GHGWATCH_ALERTS__API_PORT": str(port),
        }
    )
    log_path = tmp_path / f"api-{port}.log"
    exe = str(Path(sys.executable).with_name("ghgwatch"))
    with log_path.open("wb") as out:
        proc = subprocess.Popen([exe, "api"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield ApiProcess(proc, f"http://127.0.0.1:{port}", log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=START_WAIT_S)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server is a failure
            proc.kill()
            proc.wait(timeout=START_WAIT_S)
            raise


async def _ready(api_proc: ApiProcess, timeout_s: float = START_WAIT_S) -> None:
    """Wait until the API answers an authenticated request (its store is open)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=api_proc.url, timeout=5) as client:
        while True:
            assert api_proc.proc.poll() is None, f"api exited:\n{api_proc.log()}"
            with contextlib.suppress(httpx.TransportError):
                resp = await client.get("/silences", headers={"Authorization": f"Bearer {TOKEN}"})
                if resp.status_code == 200:
                    return
            assert time.monotonic() < deadline, f"api not ready:\n{api_proc.log()}"
            await asyncio.sleep(POLL_S)


def _stream_big_post(url: str, headers: dict[str, str]) -> int:
    """POST :data:`BIG_BODY_BYTES` chunked over a raw socket; the status the server answered.

    The body is sent until the server answers or closes: a server that reads it all
    answers only at the end, one that refuses early answers after the first chunks.
    """
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    chunk = b"%x\r\n" % CHUNK_BYTES + b" " * CHUNK_BYTES + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /silences HTTP/1.1\r\nHost: {host}\r\n{head}"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        sock.settimeout(0.0)
        answer = b""
        for _ in range(BIG_BODY_BYTES // CHUNK_BYTES):
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            sock.settimeout(30)
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.0)
        sock.settimeout(30)
        while b"\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    return int(answer.split(b" ", 2)[1])


async def test_a_300_mb_post_without_a_token_is_refused_without_reading_it(
    alert_db: str, tmp_path: Path
) -> None:
    """No token: 401 without reading the body; with a token, 413; RSS does not grow by it."""
    with _ghgwatch_api(alert_db, tmp_path) as api_proc:
        await _ready(api_proc)
        before = api_proc.rss_bytes()
        status_anon = await asyncio.to_thread(_stream_big_post, api_proc.url, {})
        status_auth = await asyncio.to_thread(
            _stream_big_post, api_proc.url, {"Authorization": f"Bearer {TOKEN}"}
        )
        after = api_proc.rss_bytes()
    assert status_anon == 401
    assert status_auth == 413
    assert after - before < RSS_GROWTH_LIMIT_BYTES, (before, after)


async def test_api_waits_for_its_database_and_logs_no_secret(test_id: str, tmp_path: Path) -> None:
    """Database missing at start: the API waits (logging retries, no password, no token),
    becomes ready once the database exists, and a refused token is not echoed either."""
    name = f"ghgw_test_{test_id}"
    base, _, _db = TEST_PG_URL.rpartition("/")
    url = _with_password(f"{base}/{name}", DB_PASSWORD)
    wrong_token = "wrong-token-never-logged-" + test_id
    try:
        with _ghgwatch_api(url, tmp_path) as api_proc:
            deadline = time.monotonic() + START_WAIT_S
            while "waiting for the database" not in api_proc.log():
                assert api_proc.proc.poll() is None, f"api exited:\n{api_proc.log()}"
                assert time.monotonic() < deadline, api_proc.log()
                await asyncio.sleep(POLL_S)
            admin = await asyncpg.connect(TEST_PG_URL)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            await migrate(f"{base}/{name}", DbSettings(), timescale=False)
            await _ready(api_proc)
            async with httpx.AsyncClient(base_url=api_proc.url, timeout=5) as client:
                resp = await client.get(
                    "/alerts", headers={"Authorization": f"Bearer {wrong_token}"}
                )
                assert resp.status_code == 401
                assert wrong_token not in resp.text
            log_text = api_proc.log()
    finally:
        admin = await asyncpg.connect(TEST_PG_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    assert "waiting for the database" in log_text
    for secret in (DB_PASSWORD, TOKEN, wrong_token):
        assert secret not in log_text, log_text
