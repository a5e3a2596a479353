"""Benchmark: detection published -> first notification delivered, at 100 detections/s.

Runs the real pipeline: a tansu Kafka broker (embedded), the local PostgreSQL (a scratch
database), ``ghgwatch alert-service`` as a subprocess, and a webhook receiver (http.server in a
thread) that timestamps each notification. Every detection opens a new alert at its own site,
the worst case: each one must become a notification.

Baseline: the same webhook POST sent directly by the publisher (no Kafka, no database, no
outbox) at the same rate - the transport floor. The report prints p50/p99 of both and the
ratio pipeline/baseline, and the ratio against the 1 s target of issue 4.

Usage: python benchmarks/bench_alerts.py [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np

from adapters.kafka import ensure_topics, make_producer
from adapters.ports import free_port
from core.settings import DbSettings, KafkaSettings
from ghgwatch.embedded import start_tansu
from processors.storage import migrate
from wire.events import DetectionRecord, DetectionState, Severity, detection_id

PG_ADMIN = os.environ.get("GHGWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_P99_S = 1.0
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 60.0


class Arrivals:
    """Receiver side: first arrival time (monotonic) per site."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.total = 0
        self.lock = threading.Lock()
        self.event = threading.Event()


def start_receiver(arrivals: Arrivals) -> tuple[ThreadingHTTPServer, int]:
    port = free_port()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            now = time.monotonic()
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            site = json.loads(body)["alert"]["site"]
            with arrivals.lock:
                arrivals.first.setdefault(site, now)
                arrivals.total += 1
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # the default backlog of 5 refuses bursts

    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def detection(site: str) -> DetectionRecord:
    device = f"bench/{site}/t1"
    started = datetime.now(UTC)
    return DetectionRecord(
        detection_id=detection_id(device, "ch4_pct_vol", "power_cut", started),
        state=DetectionState.OPEN,
        device_id=device,
        kind="mine",
        network="bench",
        site=site,
        metric="ch4_pct_vol",
        detector="power_cut",
        severity=Severity.CRITICAL,
        started_at=started,
        score=3.0,
        value=1.6,
        threshold=1.5,
        location="T1",
    )


async def paced(rate: float, n: int, send: Any) -> dict[str, float]:
    """Call ``send(site)`` n times on an absolute schedule; returns publish time per site."""
    sent: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        site = f"s{i:06d}"
        sent[site] = time.monotonic()
        await send(site)
    return sent


async def wait_for(arrivals: Arrivals, sites: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with arrivals.lock:
            if all(s in arrivals.first for s in sites):
                return
        await asyncio.sleep(0.05)
    raise SystemExit(f"timed out: {sum(s in arrivals.first for s in sites)}/{len(sites)} arrived")


def latencies(sent: dict[str, float], arrivals: Arrivals) -> np.ndarray:
    return np.array([arrivals.first[s] - t for s, t in sent.items()])


def summary(name: str, lat: np.ndarray) -> tuple[float, float]:
    p50, p99 = np.percentile(lat, [50, 99])
    print(
        f"{name:<34} n={lat.size:5d}  p50={p50 * 1000:8.1f} ms  p99={p99 * 1000:8.1f} ms"
        f"  max={lat.max() * 1000:8.1f} ms"
    )
    return float(p50), float(p99)


async def baseline(rate: float, n: int) -> np.ndarray:
    """Direct webhook POSTs from the publisher at the same rate (the transport floor)."""
    arrivals = Arrivals()
    server, port = start_receiver(arrivals)
    try:
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}/hook"
            tasks: list[asyncio.Task[Any]] = []

            async def send(site: str) -> None:
                body = {"alert": detection(site).model_dump(mode="json")}
                tasks.append(asyncio.create_task(client.post(url, json=body)))

            sent = await paced(rate, n, send)
            await asyncio.gather(*tasks)
        await wait_for(arrivals, list(sent), DRAIN_TIMEOUT_S)
        return latencies(sent, arrivals)
    finally:
        server.shutdown()


async def pipeline(rate: float, n: int, workdir: Path) -> np.ndarray:
    arrivals = Arrivals()
    server, port = start_receiver(arrivals)
    tansu = await start_tansu(workdir / "tansu", port=0)
    db_name = f"ghgw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    db_url = f"{PG_ADMIN.rpartition('/')[0]}/{db_name}"
    topic = f"bench-detections-{uuid.uuid4().hex[:6]}"
    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{tansu.port}", detections_topic=topic, partitions=3)
    proc: asyncio.subprocess.Process | None = None
    try:
        await migrate(db_url, DbSettings(), timescale=False)
        await ensure_topics(kafka, kafka.bootstrap or "", [topic])
        alerts = {
            "group_id": f"bench-{uuid.uuid4().hex[:6]}",
            "notifiers": [
                {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}
            ],
            "routes": [{"name": "all", "targets": ["hook"]}],
            "session_timeout_ms": 6000,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
        env.update(
            GHGWATCH_KAFKA__BOOTSTRAP=kafka.bootstrap or "",
            GHGWATCH_KAFKA__DETECTIONS_TOPIC=topic,
            GHGWATCH_DB__URL=db_url,
            GHGWATCH_ALERTS=json.dumps(alerts),
            GHGWATCH_LOG__LEVEL="WARNING",
        )
        log = (workdir / "alert-service.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "ghgwatch"),
            "alert-service",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        producer = make_producer(kafka, kafka.bootstrap or "")
        await producer.start()
        try:

            async def send(site: str) -> None:
                d = detection(site)
                await producer.send(topic, d.model_dump_json().encode(), key=d.device_id.encode())

            # Warm-up: the service is ready once a first notification arrives.
            await send("warmup")
            await wait_for(arrivals, ["warmup"], READY_TIMEOUT_S)
            sent = await paced(rate, n, send)
            await producer.flush()
        finally:
            await producer.stop()
        await wait_for(arrivals, list(sent), DRAIN_TIMEOUT_S)
        print(f"webhook calls received: {arrivals.total} for {n + 1} alerts")
        return latencies(sent, arrivals)
    finally:
        if proc is not None:
            proc.terminate()
            async with asyncio.timeout(20):
                await proc.wait()
        server.shutdown()
        await tansu.stop()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="detections per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    args = parser.parse_args()
    n = int(args.rate * args.seconds)
    print(f"detections: {n} at {args.rate:g}/s, each opening a new alert (one webhook each)")
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp:
        base = await baseline(args.rate, n)
        lat = await pipeline(args.rate, n, Path(tmp))
    _b50, b99 = summary("baseline: direct webhook POST", base)
    _p50, p99 = summary("pipeline: Kafka->alert->outbox->POST", lat)
    print(f"p99 ratio pipeline/baseline: {p99 / b99:.1f}x")
    verdict = "meets" if p99 <= TARGET_P99_S else "MISSES"
    print(f"p99 ratio vs 1 s target: {p99 / TARGET_P99_S:.2f} ({verdict} target)")


if __name__ == "__main__":
    asyncio.run(main())
