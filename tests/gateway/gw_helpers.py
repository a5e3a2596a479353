"""Helpers of the HJ 212 gateway tests: the test loggers, the running gateway, polling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from core.settings import Settings
from gateway.server import Gateway
from processors import Processor
from processors.storage import migrate
from registry.credentials import hash_password

TZ = ZoneInfo("Asia/Shanghai")
DEADLINE_S = 60.0
CEMS_MN = "010000A8900016F000169DC0"
CEMS_PW = "123456"
CEMS_DEVICE = "beifang/dalate/unit-3"
MINE_MN = "MINE0302"
MINE_PW = "654321"
DISABLED_MN = "OFF0001"


def loggers() -> dict[str, Any]:
    """Three loggers: a CEMS unit, a mine sensor (class T1) and a disabled one."""
    fast = 1000  # iterations: a test needs no brute-force resistance
    return {
        CEMS_MN: {"kind": "cems", "network": "beifang", "site": "dalate", "device": "unit-3",
                  "password_hash": hash_password(CEMS_PW, iterations=fast)},
        MINE_MN: {"kind": "mine", "network": "ordos-coal", "site": "buertai",
                  "device": "t1-0302", "location": "T1",
                  "password_hash": hash_password(MINE_PW, iterations=fast)},
        DISABLED_MN: {"kind": "cems", "network": "beifang", "site": "dalate", "device": "unit-9",
                      "password_hash": hash_password(CEMS_PW, iterations=fast), "enabled": False},
    }  # fmt: skip


@asynccontextmanager
async def running_gateway(settings: Settings, *, processor: bool = True) -> AsyncIterator[Gateway]:
    """Migrate, then run the gateway (and the storing processor) until the block exits."""
    await migrate(settings.db_url(), settings.db)
    stop = asyncio.Event()
    gateway = Gateway(settings)
    tasks = [asyncio.create_task(gateway.run(stop=stop))]
    if processor:
        tasks.append(asyncio.create_task(Processor(settings).run(stop=stop)))
    try:
        await gateway.wait_started(DEADLINE_S)
        yield gateway
    finally:
        stop.set()
        async with asyncio.timeout(30):
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


async def wait_for_count(db_url: str, sql: str, expected: int, *args: Any) -> int:
    """Poll ``sql`` until it returns at least ``expected`` or the deadline passes."""
    conn = await asyncpg.connect(db_url)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while True:
                got = int(await conn.fetchval(sql, *args))
                if got >= expected:
                    return got
                await asyncio.sleep(0.2)
    except TimeoutError:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()
