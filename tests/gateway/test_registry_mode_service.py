"""``ghgwatch hj212`` in registry mode (no ``gateway.loggers``), as a subprocess, with its
database reached through a TCP proxy the test can cut: a frame costs no database query (a
cached registry view, reloaded on NOTIFY); a disabled device and a rotated logger PW are
refused from their next frame; with the database gone the gateway keeps serving the loggers it
knows, refuses the others with a dead letter, and does not crash."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from gw_helpers import TZ, wait_for_count

from adapters.ports import free_port
from core.settings import Settings
from gateway.logger_sim import SimulatedLogger
from processors import Processor
from processors.storage import migrate
from registry.credentials import hash_password
from registry.models import DeviceRecord
from registry.onboard import NoBroker, Onboarding

MN_A, PW_A = "88888880000011", "123456"
MN_B, PW_B = "88888880000012", "abcdef"
DEVICE_A = "beifang/dalate/unit-1"
DEVICE_B = "beifang/dalate/unit-2"
UNKNOWN_MN = "88888880000099"
VALUES = {"a05001": 11.8, "a19001": 6.1}
REFUSED_S = 3.0  # an unanswered frame: waited for this long
NOTIFY_S = 1.5  # a registry change has reached the gateway's view by then


class PgProxy:
    """A TCP forwarder to PostgreSQL that counts the bytes clients send and can be cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.sent = 0  # bytes from the clients to PostgreSQL
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones (the database is gone)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65_536):
                if count:
                    self.sent += len(data)
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)
        )


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@asynccontextmanager
async def hj212_service(settings: Settings, db_url: str, tmp: Path) -> AsyncIterator[int]:
    """``python -m ghgwatch hj212`` with these settings' Kafka and ``db_url``; yields its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update({
        "GHGWATCH_DB__URL": db_url,
        "GHGWATCH_DATA_DIR": str(tmp / "gw-data"),
        "GHGWATCH_KAFKA__BOOTSTRAP": settings.kafka_bootstrap(),
        "GHGWATCH_KAFKA__READINGS_TOPIC": settings.kafka.readings_topic,
        "GHGWATCH_KAFKA__DEADLETTER_TOPIC": settings.kafka.deadletter_topic,
        "GHGWATCH_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
        "GHGWATCH_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "GHGWATCH_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
        "GHGWATCH_METRICS__ENABLED": "false",
        "GHGWATCH_GATEWAY__HOST": "127.0.0.1",
        "GHGWATCH_GATEWAY__PORT": str(port),
        "GHGWATCH_INGEST__REGISTRY_REFRESH_S": "600",  # only NOTIFY reloads within the test
    })  # fmt: skip
    log = (tmp / "hj212.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghgwatch", "hj212", env=env, cwd=tmp, stdout=log, stderr=log
    )
    try:
        async with asyncio.timeout(60):
            while True:
                assert proc.returncode is None, (tmp / "hj212.log").read_text()
                try:
                    _r, w = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.2)
                    continue
                w.close()
                break
        yield port
        assert proc.returncode is None, "the gateway died: " + (tmp / "hj212.log").read_text()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_registry_mode_uses_a_cached_view_and_survives_the_database(
    gateway_settings, tmp_path: Path
) -> None:
    settings = gateway_settings(loggers={})
    db = settings.db_url()
    await migrate(db, settings.db)
    conn = await asyncpg.connect(db)
    onboarding = Onboarding(conn, NoBroker())
    for device, mn, pw in ((DEVICE_A, MN_A, PW_A), (DEVICE_B, MN_B, PW_B)):
        unit = DeviceRecord(device_id=device, kind="cems", hj212_mn=mn)
        await onboarding.add(unit, hj212_password=pw)
    pg = urlsplit(db)
    proxy = PgProxy((pg.hostname or "127.0.0.1", pg.port or 5432))
    await proxy.start()
    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    loggers: list[SimulatedLogger] = []
    try:
        async with hj212_service(settings, _via(db, proxy.port), tmp_path) as port:

            async def logger(mn: str, pw: str) -> SimulatedLogger:
                sim = SimulatedLogger("127.0.0.1", port, mn=mn, pw=pw, tz=TZ)
                await sim.connect()
                loggers.append(sim)
                return sim

            a, b = await logger(MN_A, PW_A), await logger(MN_B, PW_B)
            assert await a.upload("2011", t0, VALUES)
            assert await b.upload("2011", t0, VALUES)
            # 1. A frame costs no query: nothing more goes to the database for 10 frames.
            before = proxy.sent
            for i in range(1, 11):
                assert await a.upload("2011", t0 + timedelta(seconds=10 * i), VALUES)
            assert proxy.sent == before, "the gateway queried the database per frame"

            # 2. B disabled, A's logger PW rotated: refused from the next frame (NOTIFY).
            await onboarding.set_enabled(DEVICE_B, False)
            await conn.execute(
                "UPDATE registry_devices SET hj212_password_hash = $2 WHERE hj212_mn = $1",
                MN_A, hash_password("rotated", iterations=1000),
            )  # fmt: skip
            await asyncio.sleep(NOTIFY_S)
            assert not await b.upload(
                "2011", t0 + timedelta(minutes=5), VALUES, timeout_s=REFUSED_S
            )
            assert not await a.upload(
                "2011", t0 + timedelta(minutes=5), VALUES, timeout_s=REFUSED_S
            )
            a.pw = "rotated"
            assert await a.upload("2011", t0 + timedelta(minutes=6), VALUES)

            # 3. The database is gone: the known logger is still served (the last view), on
            # its connection and on a new one; an unknown MN is refused with a dead letter.
            await proxy.cut()
            await asyncio.sleep(0.5)
            assert await a.upload("2011", t0 + timedelta(minutes=7), VALUES)
            stranger = await logger(UNKNOWN_MN, PW_A)
            assert not await stranger.upload(
                "2011", t0 + timedelta(minutes=7), VALUES, timeout_s=REFUSED_S
            )
            again = await logger(MN_A, "rotated")
            assert await again.upload("2011", t0 + timedelta(minutes=8), VALUES)
            assert await a.upload("2011", t0 + timedelta(minutes=9), VALUES)

        stored = "SELECT count(DISTINCT ts) FROM readings WHERE device_id = $1"
        assert await wait_for_count(db, stored, 15, DEVICE_A) == 15
        assert await wait_for_count(db, stored, 1, DEVICE_B) == 1
        dead = "SELECT count(*) FROM dead_letters WHERE reason = $1"
        for reason in ("disabled", "bad_password", "unknown_mn"):
            assert await wait_for_count(db, dead, 1, reason) == 1, reason
        detail = await conn.fetchval("SELECT detail FROM dead_letters WHERE reason = 'unknown_mn'")
        assert "registry" in detail  # why: the view could not be refreshed
    finally:
        for sim in loggers:
            await sim.close()
        stop.set()
        await asyncio.wait_for(processor, 30)
        await proxy.cut()
        await conn.close()
