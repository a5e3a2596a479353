"""Fixtures for the alert tests: a migrated database, real HTTP and SMTP receivers, detections."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from adapters.ports import free_port
from core.settings import DbSettings, Settings
from processors.storage import migrate
from wire.events import DetectionRecord, DetectionState, Severity, detection_id

WAIT_S = 20.0
POLL_S = 0.02


@pytest.fixture
async def alert_db(pg_url: str) -> str:
    """The test database with the whole schema migrated (the project's runner, plain PG)."""
    report = await migrate(pg_url, DbSettings(), timescale=False)
    assert any(name.startswith("200_") for name in report.applied), report.applied
    return pg_url


async def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


def det(
    *,
    device: str = "im/shendong-3/t1-04",
    detector: str = "power_cut",
    severity: Severity = Severity.CRITICAL,
    kind: str = "mine",
    metric: str = "ch4_pct_vol",
    value: float = 1.62,
    threshold: float | None = 1.5,
    started_at: datetime | None = None,
    state: DetectionState = DetectionState.OPEN,
    ended_at: datetime | None = None,
    location: str | None = "T1",
) -> DetectionRecord:
    """A detection as the detection engine publishes it (stable id from its onset)."""
    network, site, _dev = device.split("/")
    started = started_at or datetime(2026, 11, 25, 2, 30, tzinfo=UTC)
    return DetectionRecord(
        detection_id=detection_id(device, metric, detector, started),
        state=state,
        device_id=device,
        kind=kind,
        network=network,
        site=site,
        metric=metric,
        detector=detector,
        severity=severity,
        started_at=started,
        ended_at=ended_at,
        score=5.0,
        value=value,
        threshold=threshold,
        location=location,
    )


def cleared(d: DetectionRecord, ended_at: datetime | None = None) -> DetectionRecord:
    """The CLEARED record for an OPEN detection (same id)."""
    return d.model_copy(
        update={"state": DetectionState.CLEARED, "ended_at": ended_at or datetime.now(UTC)}
    )


@dataclass
class Captured:
    """One HTTP request as the receiver saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server in a thread that records every request.

    ``responder(request) -> (status, json body)`` decides the answer; default 200 ``{}``.
    """

    port: int
    requests: list[Captured] = field(default_factory=list)
    responder: Callable[[Captured], tuple[int, Any]] | None = None
    hold: threading.Event | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        """URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def got(self, path_prefix: str = "/") -> list[Captured]:
        """Requests so far whose path starts with ``path_prefix``."""
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Start a capturing HTTP receiver on a free port for this test."""
    rec = Receiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length) if length else b""
            parsed = urllib.parse.urlsplit(self.path)
            cap = Captured(
                method=self.command,
                path=parsed.path,
                query=urllib.parse.parse_qs(parsed.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                at=time.monotonic(),
            )
            with rec.lock:
                rec.requests.append(cap)
            status, answer = rec.responder(cap) if rec.responder else (200, {})
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = _handle  # noqa: N815 - http.server's naming
        do_PUT = _handle  # noqa: N815
        do_PATCH = _handle  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", rec.port), Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-receiver", daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Mailbox:
    """Mail received by the test SMTP server."""

    port: int
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on a free port, in its own thread."""
    box = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: Any, session: Any, envelope: Any
        ) -> str:
            box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def alert_settings(
    settings_factory: Callable[..., Settings], test_id: str, alert_db: str
) -> Callable[..., Settings]:
    """Settings for an alert test: own detections topic and group, fast timings."""

    def build(**alerts: Any) -> Settings:
        base: dict[str, Any] = {
            "group_id": f"alerts-{test_id}",
            "dispatch_poll_s": 0.2,
            "tick_s": 0.1,
            "retry_base_s": 0.05,
            "retry_max_s": 0.2,
            "send_timeout_s": 5.0,
            "lease_s": 30.0,
            "session_timeout_ms": 6000,
        }
        base.update(alerts)
        return settings_factory(
            kafka={"detections_topic": f"detections-{test_id}", "partitions": 2},
            alerts=base,
        )

    return build


async def produce(settings: Settings, records: list[DetectionRecord]) -> None:
    """Publish detections to the test's detections topic (key: device id), acks=all."""
    from adapters.kafka import ensure_topics, make_producer

    await ensure_topics(
        settings.kafka, settings.kafka_bootstrap(), [settings.kafka.detections_topic]
    )
    producer = make_producer(settings.kafka, settings.kafka_bootstrap())
    await producer.start()
    try:
        futs = [
            await producer.send(
                settings.kafka.detections_topic,
                r.model_dump_json().encode(),
                key=r.device_id.encode(),
            )
            for r in records
        ]
        await producer.flush()
        for f in futs:
            await f
    finally:
        await producer.stop()


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., asyncio.Task[Any]]]:
    """Start coroutines as tasks that are stopped (and awaited) when the test ends."""
    tasks: list[tuple[asyncio.Task[Any], asyncio.Event | None]] = []

    def start(coro: Any, stop: asyncio.Event | None = None) -> asyncio.Task[Any]:
        t = asyncio.create_task(coro)
        tasks.append((t, stop))
        return t

    yield start
    for _t, stop in tasks:
        if stop is not None:
            stop.set()
    for t, _ in tasks:
        try:
            async with asyncio.timeout(15):
                await t
        except (TimeoutError, asyncio.CancelledError):
            t.cancel()
