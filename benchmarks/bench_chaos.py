"""Chaos benchmark: a sustained load with one fault at a time, every reading and page counted.

Everything runs on this machine and is private to the run: a Mosquitto with persistence on,
the tansu Kafka-protocol broker, an embedded PostgreSQL (so it can be restarted without
touching the machine's server), and the ghgwatch services as separate processes
(``ghgwatch bridge``, ``processor``, ``detector``, ``alert-service``), exactly as deployed.

A publisher (paho, MQTT 5, persistent session, QoS 1) sends single-reading mine messages at a
fixed rate from 50 devices and remembers which ones the broker acknowledged (PUBACK). Each row
starts a fresh database, fresh topics and a fresh topic root, injects its fault a third of
the way into the load, and after the load waits for the pipeline to drain. Then it counts:

- sent / acked: messages published, and those the broker acknowledged;
- stored: acknowledged readings found in ``readings`` (lost = acked - stored);
- doubled: rows beyond one per (device, metric, ts), and ``devices.readings_count`` above the
  rows (either would be a reading stored twice);
- dead letters: rows and deliveries in ``dead_letters`` for the row's topic root;
- pages (the rows with ``+pages``): 150 mine sites cross the power-cut level during the load;
  a webhook receiver counts deliveries per idempotency key (doubled = deliveries beyond one
  per key; lost = outbox notifications marked sent but never received);
- stall: the pipeline did not drain within the deadline.

    python benchmarks/bench_chaos.py                       # every fault, about 10 minutes
    python benchmarks/bench_chaos.py --kafka-storage memory  # tansu forgets all on restart

Kafka's records must outlive the broker process for the ``restart-kafka`` row to mean
anything (Apache Kafka keeps them in its log). tansu keeps them in an S3 store with
``--kafka-storage s3`` (the default when ``moto_server``, a local S3 server from the dev
dependencies, is installed): the S3 server runs beside it for the whole run, so a SIGKILL and
restart of the broker finds its topics, records and committed offsets again.
    python benchmarks/bench_chaos.py --faults kill-bridge,restart-mosquitto --rate 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from adapters.ports import free_port
from ghgwatch.embedded import (
    ManagedProcess,
    mosquitto_password_line,
    start_mosquitto,
    start_postgres,
    start_tansu,
)

_CLI = "from ghgwatch.cli import main; main()"
DEVICES = 50
PAGE_SITES = 150
DRAIN_DEADLINE_S = 90.0
SETTLE_S = 4.0
WARMUP_DEADLINE_S = 90.0
SERVICES = ("bridge", "processor", "detector", "alert-service")
POISON = b'{"ts":"%s","metric":"co2_ppm","value":1,"a\\u0000b":1}'
PASSWORD = "chaos-" + uuid.uuid4().hex  # one run's broker logins
S3_BUCKET = "tansu"


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """The private brokers and database of the run; restartable in place."""

    work: Path
    mosquitto: ManagedProcess
    tansu: ManagedProcess
    postgres: ManagedProcess
    mqtt_port: int
    kafka_port: int
    pg_port: int
    mqtt_conf: str
    kafka_storage: str = "memory://tansu/"
    kafka_env: dict[str, str] | None = None
    s3: ManagedProcess | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    async def restart_mosquitto(self, *, kill: bool) -> None:
        if kill:
            self.mosquitto.kill()
        await self.mosquitto.stop()
        self.mosquitto = await start_mosquitto(
            self.work / "mosquitto", port=self.mqtt_port, extra_conf=self.mqtt_conf
        )

    async def restart_postgres(self, down_s: float) -> None:
        await self.postgres.stop()
        await asyncio.sleep(down_s)
        self.postgres = await start_postgres(self.work / "postgres", port=self.pg_port)

    async def restart_tansu(self) -> None:
        self.tansu.kill()  # a crash: nothing flushed on the way out
        await self.tansu.stop()
        self.tansu = await start_tansu(
            self.work / "tansu",
            port=self.kafka_port,
            storage=self.kafka_storage,
            env=self.kafka_env,
        )

    async def close(self) -> None:
        for proc in (self.mosquitto, self.tansu, self.postgres, self.s3):
            if proc is None:
                continue
            with contextlib.suppress(Exception):
                await proc.stop()


async def start_s3(work: Path) -> tuple[ManagedProcess, dict[str, str]]:
    """A local S3 server (moto) with tansu's bucket, and the environment tansu needs for it."""
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    s3 = await ManagedProcess(
        "s3(moto)", [binary, "-H", "127.0.0.1", "-p", str(port)], "127.0.0.1", port,
        work / "s3" / "moto.log",
    ).start()  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        (await client.put(f"{endpoint}/{S3_BUCKET}")).raise_for_status()
    env = {
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "chaos",
        "AWS_SECRET_ACCESS_KEY": "chaos",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return s3, env


async def start_stack(work: Path, tags: list[str], kafka_storage: str = "memory") -> Stack:
    """Brokers and database; Mosquitto with the shipped identity rules (deploy/mosquitto):
    no anonymous clients and client ids bound to usernames, one login per bridge."""
    mqtt_port, kafka_port, pg_port = free_port(), free_port(), free_port()
    (work / "mosquitto").mkdir(parents=True, exist_ok=True)
    passwd = (work / "mosquitto" / "chaos.passwd").resolve()
    users = [f"bridge-{tag}" for tag in tags] + [f"pub-{tag}" for tag in tags] + ["device-7"]
    passwd.write_text("".join(mosquitto_password_line(u, PASSWORD) + "\n" for u in users))
    passwd.chmod(0o600)
    conf = f"allow_anonymous false\npassword_file {passwd}\nuse_username_as_clientid true"
    mosq = await start_mosquitto(work / "mosquitto", port=mqtt_port, extra_conf=conf)
    s3, env, storage = None, None, "memory://tansu/"
    if kafka_storage == "s3":
        s3, env = await start_s3(work)
        storage = f"s3://{S3_BUCKET}/"
    tansu = await start_tansu(work / "tansu", port=kafka_port, storage=storage, env=env)
    pg = await start_postgres(work / "postgres", port=pg_port)
    return Stack(
        work, mosq, tansu, pg, mqtt_port, kafka_port, pg_port, conf, storage, env, s3
    )  # fmt: skip


# ------------------------------------------------------------------------- the services


@dataclass
class Service:
    """One ghgwatch service process, killable and restartable with the same settings."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    restarting: bool = False

    async def start(self) -> None:
        with self.log_path.open("ab") as log_file:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CLI,
                self.name,
                env=self.env,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def kill_and_restart(self, down_s: float = 1.0) -> None:
        assert self.proc is not None
        self.restarting = True
        try:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            await asyncio.sleep(down_s)
            self.restarts += 1
            await self.start()
        finally:
            self.restarting = False

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(30.0):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def keep_alive(self) -> None:
        """Restart the service whenever it exits on its own (what a supervisor does)."""
        while True:
            await asyncio.sleep(0.5)
            if self.restarting:
                continue
            if self.proc is not None and self.proc.returncode is not None:
                self.restarts += 1
                await self.start()


def service_env(stack: Stack, row: str, db: str, hook_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(
        {
            "GHGWATCH_MQTT__URL": f"mqtt://127.0.0.1:{stack.mqtt_port}",
            "GHGWATCH_MQTT__TOPIC_ROOT": f"{row}/v1",
            "GHGWATCH_MQTT__CLIENT_ID": f"bridge-{row}",
            "GHGWATCH_MQTT__USERNAME": f"bridge-{row}",
            "GHGWATCH_MQTT__PASSWORD": PASSWORD,
            # The default subscription scheme (plain subscriptions over mqtt.topic_filters).
            "GHGWATCH_KAFKA__BOOTSTRAP": f"127.0.0.1:{stack.kafka_port}",
            "GHGWATCH_KAFKA__READINGS_TOPIC": f"readings-{row}",
            "GHGWATCH_KAFKA__DEADLETTER_TOPIC": f"deadletter-{row}",
            "GHGWATCH_KAFKA__EVENTS_TOPIC": f"events-{row}",
            "GHGWATCH_KAFKA__DETECTIONS_TOPIC": f"detections-{row}",
            "GHGWATCH_KAFKA__PARTITIONS": "3",
            "GHGWATCH_DB__URL": f"postgresql://postgres@127.0.0.1:{stack.pg_port}/{db}",
            "GHGWATCH_PROCESSOR__GROUP_ID": f"proc-{row}",
            "GHGWATCH_DETECTION__GROUP_ID": f"det-{row}",
            "GHGWATCH_ALERTS__GROUP_ID": f"alerts-{row}",
            "GHGWATCH_ALERTS__NOTIFIERS": json.dumps(
                [{"name": "hook", "type": "webhook", "url": hook_url}]
            ),
            "GHGWATCH_ALERTS__ROUTES": json.dumps(
                [{"name": "all", "targets": ["hook"], "severities": ["warning", "critical"]}]
            ),
            "GHGWATCH_METRICS__ENABLED": "false",
            "GHGWATCH_LOG__LEVEL": "WARNING",
            "GHGWATCH_LOG__FORMAT": "json",
        }
    )
    return env


# ------------------------------------------------------------------------ the publisher


class Publisher:
    """QoS 1 publisher on a persistent MQTT 5 session; remembers what the broker acked."""

    def __init__(self, port: int, client_id: str) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self.client.username_pw_set(client_id, PASSWORD)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        self.sent: list[tuple[mqtt.MQTTMessageInfo, tuple[str, int]]] = []
        self.extra_sent = 0

    def publish_reading(self, root: str, net: str, site: str, dev: str, value: float) -> None:
        ts_us = time.time_ns() // 1000
        # Built from integers: a float round trip can move the timestamp by a microsecond.
        ts = (
            datetime.fromtimestamp(ts_us // 1_000_000, UTC)
            .replace(microsecond=ts_us % 1_000_000)
            .isoformat()
        )
        payload = json.dumps({"ts": ts, "metric": "ch4_pct_vol", "value": value, "location": "T1"})
        info = self.client.publish(f"{root}/mine/{net}/{site}/{dev}/data", payload, qos=1)
        self.sent.append((info, (f"{net}/{site}/{dev}", ts_us)))

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)
        self.extra_sent += 1

    def acked(self) -> set[tuple[str, int]]:
        # is_published() raises for a message published while disconnected, which paho
        # still queues and sends after reconnecting; the flag itself is what PUBACK sets.
        return {key for info, key in self.sent if info._published}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_load(
    pub: Publisher,
    root: str,
    net: str,
    rate: float,
    duration_s: float,
    stop: threading.Event,
    page_sites: int,
) -> None:
    """Publish ``rate`` readings/s for ``duration_s``; page sites cross the cut level midway."""
    t0 = time.monotonic()
    n = 0
    rng = random.Random(7)
    paged = False
    while not stop.is_set():
        elapsed = time.monotonic() - t0
        if elapsed >= duration_s:
            break
        due = int(elapsed * rate)
        while n < due:
            dev = n % DEVICES
            value = round(0.30 + rng.uniform(-0.005, 0.005), 4)
            pub.publish_reading(root, net, f"s{dev % 10}", f"d{dev}", value)
            n += 1
        if page_sites and not paged and elapsed > duration_s / 3:
            for site in range(page_sites):
                for value in (1.8, 1.9, 2.0):
                    pub.publish_reading(root, f"{net}p", f"p{site}", "t1-0001", value)
            paged = True
        time.sleep(0.002)


# ------------------------------------------------------------------------ the receiver


@dataclass
class Receiver:
    """A minimal HTTP endpoint for the webhook notifier: counts deliveries per key."""

    deliveries: Counter[str] = field(default_factory=Counter)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                key = headers.get("idempotency-key") or json.loads(body).get("idempotency_key")
                self.deliveries[str(key)] += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def reset(self) -> None:
        self.deliveries.clear()


# ---------------------------------------------------------------------------- the faults


@dataclass
class Row:
    """One fault and what came of it."""

    fault: str
    pages: bool = False
    sent: int = 0
    acked: int = 0
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    dead_letters: int = 0
    dl_deliveries: int = 0
    pages_queued: int = 0
    pages_delivered: int = 0
    pages_doubled: int = 0
    pages_lost: int = 0
    stalled: bool = False
    restarts: int = 0
    drain_s: float = 0.0
    note: str = ""


Fault = Callable[[Stack, dict[str, Service], Publisher, str], Awaitable[str]]


def _kill(name: str, times: int = 1) -> Fault:
    async def fault(_s: Stack, services: dict[str, Service], _p: Publisher, _r: str) -> str:
        for _ in range(times):
            await services[name].kill_and_restart(down_s=1.0 if times == 1 else 0.3)
            if times > 1:
                await asyncio.sleep(0.7)
        return f"SIGKILL {name}" + (f" {times} times, 1 s apart" if times > 1 else ", 1 s down")

    return fault


async def _restart_mosquitto(stack: Stack, *_a: Any) -> str:
    await stack.restart_mosquitto(kill=False)
    return "SIGTERM mosquitto, restarted (persistence on)"


async def _kill_mosquitto(stack: Stack, *_a: Any) -> str:
    await stack.restart_mosquitto(kill=True)
    return "SIGKILL mosquitto, restarted (persistence on)"


async def _restart_postgres(stack: Stack, *_a: Any) -> str:
    await stack.restart_postgres(down_s=10.0)
    return "PostgreSQL stopped for 10 s"


async def _restart_tansu(stack: Stack, *_a: Any) -> str:
    await stack.restart_tansu()
    if stack.s3 is None:
        return "tansu SIGKILLed and restarted (memory storage: its topics and offsets are gone)"
    return "tansu SIGKILLed and restarted (S3 storage: records and offsets kept)"


async def _flood(_s: Stack, _sv: dict[str, Service], pub: Publisher, root: str) -> str:
    for i in range(5000):
        pub.publish_raw(f"{root}/mine/flood/s{i % 500}/d{i % 500}/data", b'{"ts": 1, "x": 2}')
    return "5,000 schema-invalid messages from 500 devices"


async def _poison(_s: Stack, _sv: dict[str, Service], pub: Publisher, root: str) -> str:
    now = datetime.now(UTC).isoformat().encode()
    pub.publish_raw(f"{root}/city/poison/s1/d1/data", POISON % now)
    return "one reading with a NUL in a JSON key"


async def _takeover(stack: Stack, _sv: dict[str, Service], _p: Publisher, root: str) -> str:
    bridge_id = f"bridge-{root.split('/', maxsplit=1)[0]}"
    for _ in range(8):
        thief = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=bridge_id)
        with contextlib.suppress(OSError):
            thief.connect("127.0.0.1", stack.mqtt_port)
            thief.loop_start()
            await asyncio.sleep(0.5)
            thief.disconnect()
            thief.loop_stop()
        await asyncio.sleep(0.5)
    return "8 half-second takeovers of the bridge's client id with a device login"


async def _none(*_a: Any) -> str:
    return "no fault"


FAULTS: dict[str, tuple[Fault, bool]] = {
    "none": (_none, True),
    "kill-bridge": (_kill("bridge"), False),
    "kill-processor": (_kill("processor"), False),
    "kill-detector": (_kill("detector"), True),
    "kill-alert-service": (_kill("alert-service", times=8), True),
    "restart-mosquitto": (_restart_mosquitto, False),
    "kill-mosquitto": (_kill_mosquitto, False),
    "restart-postgres": (_restart_postgres, False),
    "restart-kafka": (_restart_tansu, False),
    "reject-flood": (_flood, False),
    "poison-record": (_poison, False),
    "session-takeover": (_takeover, False),
}


# ------------------------------------------------------------------------------ one row


async def _stored_keys(conn: asyncpg.Connection, net: str) -> tuple[set[tuple[str, int]], int]:
    rows = await conn.fetch(
        "SELECT device_id, (extract(epoch FROM ts) * 1000000)::bigint AS us FROM readings"
        " WHERE device_id LIKE $1",
        f"{net}%/%",  # the row's devices and its paging sites ({net}p)
    )
    return {(r["device_id"], int(r["us"])) for r in rows}, len(rows)


async def _connect(url: str) -> asyncpg.Connection:
    deadline = time.monotonic() + 60.0
    while True:
        try:
            return await asyncpg.connect(url, timeout=5.0)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run_row(
    stack: Stack,
    receiver: Receiver,
    fault_name: str,
    tag: str,
    args: argparse.Namespace,
    work: Path,
) -> Row:
    fault, pages = FAULTS[fault_name]
    pages = pages and not args.no_pages
    root, net, db = f"{tag}/v1", f"n{tag}", f"chaos_{tag}"
    row = Row(fault=fault_name, pages=pages)
    admin = await _connect(stack.admin_url)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    env = service_env(stack, tag, db, f"http://127.0.0.1:{receiver.port}/hook")
    db_url = env["GHGWATCH_DB__URL"]
    migrated = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLI, "db", "migrate", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    if await migrated.wait() != 0:
        raise RuntimeError("ghgwatch db migrate failed")
    services = {
        name: Service(name, env, work / f"{tag}-{name}.log")
        for name in SERVICES
        if pages or name in ("bridge", "processor")
    }
    for svc in services.values():
        await svc.start()
    keepers = [asyncio.create_task(svc.keep_alive()) for svc in services.values()]
    receiver.reset()
    pub = Publisher(stack.mqtt_port, f"pub-{tag}")
    try:
        # Warm up: a trickle until the first reading is stored (consumers joined, subscribed).
        conn = await _connect(db_url)
        deadline = time.monotonic() + WARMUP_DEADLINE_S
        while not await conn.fetchval("SELECT count(*) FROM readings"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{fault_name}: nothing stored within the warm-up")
            pub.publish_reading(root, f"w{tag}", "s0", "d0", 0.3)
            await asyncio.sleep(0.5)
        await conn.close()
        pub.sent.clear()  # the warm-up trickle is not part of the row
        stop = threading.Event()
        load = asyncio.create_task(
            asyncio.to_thread(
                run_load,
                pub,
                root,
                net,
                args.rate,
                args.duration,
                stop,
                PAGE_SITES if pages else 0,
            )
        )
        await asyncio.sleep(args.duration / 3 + 0.2)  # just after the page burst
        row.note = await fault(stack, services, pub, root)
        await load
        # Drain: acked readings stored, and the count no longer moving.
        t_end = time.monotonic()
        conn = await _connect(db_url)
        last, still_since = -1, time.monotonic()
        while True:
            acked = pub.acked()
            try:
                keys, _ = await _stored_keys(conn, net)
            except (OSError, asyncpg.PostgresError):
                conn = await _connect(db_url)
                continue
            if len(keys) != last:
                last, still_since = len(keys), time.monotonic()
            done = acked <= keys and time.monotonic() - still_since > SETTLE_S
            if pages:
                # Every paging site has its alert queued, nothing is left to send, and the
                # webhook has heard of every alert.
                queued, pending = await conn.fetchrow(
                    "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'sending'))"
                    " FROM alert_outbox"
                )
                done = (
                    done
                    and queued >= PAGE_SITES
                    and pending == 0
                    and len(receiver.deliveries) >= queued
                )
            if done or time.monotonic() - t_end > DRAIN_DEADLINE_S:
                row.stalled = not done
                break
            await asyncio.sleep(1.0)
        row.drain_s = time.monotonic() - t_end
        acked = pub.acked()
        keys, rows_n = await _stored_keys(conn, net)
        row.sent = len(pub.sent) + pub.extra_sent
        row.acked = len(acked)
        row.stored = len(acked & keys)
        row.lost = len(acked - keys)
        if row.lost and args.verbose:
            print("\n  lost, first 5:", sorted(acked - keys)[:5])
        counted = await conn.fetchval(
            "SELECT coalesce(sum(readings_count), 0) FROM devices WHERE device_id LIKE $1",
            f"{net}%/%",
        )
        row.doubled = (rows_n - len(keys)) + max(0, int(counted) - rows_n)
        dl = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(occurrences), 0) AS occ FROM dead_letters"
        )
        row.dead_letters, row.dl_deliveries = int(dl["n"]), int(dl["occ"])
        if pages:
            sent_keys = {
                r["idempotency_key"]
                for r in await conn.fetch(
                    "SELECT idempotency_key FROM alert_outbox WHERE status = 'sent'"
                )
            }
            row.pages_queued = int(await conn.fetchval("SELECT count(*) FROM alert_outbox"))
            row.pages_delivered = len(receiver.deliveries)
            row.pages_doubled = sum(n - 1 for n in receiver.deliveries.values())
            row.pages_lost = len(sent_keys - set(receiver.deliveries))
        await conn.close()
    finally:
        pub.close()
        for task in keepers:
            task.cancel()
        row.restarts = sum(svc.restarts for svc in services.values())
        for svc in services.values():
            await svc.stop()
    return row


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"\nghgwatch chaos benchmark: {args.rate:,.0f} readings/s for {args.duration:.0f} s"
        f" per row, fault at {args.duration / 3:.0f} s; {os.cpu_count()} CPUs"
    )
    head = (
        f"{'fault':<20}{'sent':>8}{'acked':>8}{'stored':>8}{'lost':>6}{'doubled':>8}"
        f"{'dead l.':>8}{'pages':>7}{'deliv.':>7}{'doubled':>8}{'lost':>6}{'stall':>6}"
        f"{'drain s':>8}  what"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        pages = (
            f"{r.pages_queued:>7}{r.pages_delivered:>7}{r.pages_doubled:>8}{r.pages_lost:>6}"
            if r.pages
            else f"{'-':>7}{'-':>7}{'-':>8}{'-':>6}"
        )
        print(
            f"{r.fault:<20}{r.sent:>8,}{r.acked:>8,}{r.stored:>8,}{r.lost:>6,}{r.doubled:>8}"
            f"{r.dead_letters:>8,}{pages}{'yes' if r.stalled else 'no':>6}{r.drain_s:>8.1f}"
            f"  {r.note}"
        )


async def main_async(args: argparse.Namespace) -> list[Row]:
    names = list(FAULTS) if args.faults == "all" else args.faults.split(",")
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
    work = Path(args.work or f"/tmp/ghgwatch-chaos-{uuid.uuid4().hex[:6]}")
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder (service logs): {work}", flush=True)
    tags = ["c" + uuid.uuid4().hex[:8] for _ in names]
    storage = args.kafka_storage or ("s3" if _have_moto() else "memory")
    print(f"tansu storage: {storage}", flush=True)
    stack = await start_stack(work, tags, storage)
    receiver = Receiver()
    await receiver.start()
    rows: list[Row] = []
    try:
        for i, (name, tag) in enumerate(zip(names, tags, strict=True), 1):
            print(f"[{i}/{len(names)}] {name} ...", end="", flush=True)
            row = await run_row(stack, receiver, name, tag, args, work)
            rows.append(row)
            print(
                f" acked {row.acked:,}, lost {row.lost}, doubled {row.doubled}"
                + (f", pages doubled {row.pages_doubled}" if row.pages else ""),
                flush=True,
            )
    finally:
        await stack.close()
        if receiver.server is not None:
            receiver.server.close()
    return rows


def _have_moto() -> bool:
    return bool(
        shutil.which("moto_server") or (Path(sys.executable).parent / "moto_server").exists()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--kafka-storage",
        choices=["memory", "s3"],
        default=None,
        help="tansu's storage (default: s3 when moto_server is installed, else memory)",
    )
    parser.add_argument("--faults", default="all", help=f"comma list of: {', '.join(FAULTS)}")
    parser.add_argument("--rate", type=float, default=1000.0, help="readings/s")
    parser.add_argument("--duration", type=float, default=24.0, help="seconds of load per row")
    parser.add_argument("--no-pages", action="store_true", help="skip detection and alerts")
    parser.add_argument("--work", help="folder for the brokers' data and the service logs")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--verbose", action="store_true", help="list lost readings")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
