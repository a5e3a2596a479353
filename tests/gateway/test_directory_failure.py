"""A logger directory that fails (the registry's database errors, a bug) refuses the frame with
a logged reason and a dead letter; it neither ends the connection nor touches the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gw_helpers import CEMS_DEVICE, CEMS_MN, CEMS_PW, DEADLINE_S, TZ, wait_for_count

from core.errors import StorageBackpressure
from core.settings import Settings
from gateway.directory import LoggerIdentity, LoggerRefusal, StaticDirectory
from gateway.logger_sim import SimulatedLogger
from gateway.server import Gateway
from processors import Processor
from processors.storage import migrate

BROKEN_MN = "BROKEN01"
VALUES = {"a05001": 11.8}


class FailingDirectory:
    """The test loggers, but looking ``BROKEN01`` up fails as a lost database does."""

    def __init__(self, settings: Settings) -> None:
        self._static = StaticDirectory(settings.gateway)

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        if mn == BROKEN_MN:
            raise StorageBackpressure("read device by MN: connection was closed")
        return await self._static.resolve(mn, pw)


async def test_a_failing_directory_refuses_the_frame_and_keeps_serving(gateway_settings) -> None:
    settings = gateway_settings()
    db = settings.db_url()
    await migrate(db, settings.db)
    stop = asyncio.Event()
    gateway = Gateway(settings, FailingDirectory(settings))
    tasks = [asyncio.create_task(gateway.run(stop=stop)),
             asyncio.create_task(Processor(settings).run(stop=stop))]  # fmt: skip
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    try:
        port = await gateway.wait_started(DEADLINE_S)
        broken = SimulatedLogger("127.0.0.1", port, mn=BROKEN_MN, pw=CEMS_PW, tz=TZ)
        other = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await broken.connect()
        await other.connect()
        assert not await broken.upload("2011", t0, VALUES, timeout_s=3.0)
        assert await other.upload("2011", t0, VALUES)
        # the connection of the frame that failed is still served
        broken.mn = CEMS_MN
        assert await broken.upload("2011", t0 + timedelta(seconds=10), VALUES)
        assert gateway.connections == 2
        await broken.close()
        await other.close()
        dead = "SELECT count(*) FROM dead_letters WHERE reason = 'unknown_mn' AND detail LIKE $1"
        assert await wait_for_count(db, dead, 1, "%logger directory failed%") == 1
        stored = "SELECT count(*) FROM readings WHERE device_id = $1"
        assert await wait_for_count(db, stored, 2, CEMS_DEVICE) == 2
    finally:
        stop.set()
        async with asyncio.timeout(30):
            results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
