"""Services of the real pipeline run side by side for the length of a test block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from ingest import Bridge

Runner = Callable[[asyncio.Event], Awaitable[object]]


@asynccontextmanager
async def running(
    bridge: Bridge,
    runners: Sequence[Runner],
    *,
    connect_timeout_s: float,
    stop_timeout_s: float,
) -> AsyncIterator[Bridge]:
    """Start every runner (one of them runs ``bridge``), wait until the bridge is subscribed,
    and at the end of the block stop them all and raise the first error any of them ended
    with."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run(stop)) for run in runners]
    try:
        # A shared subscription keeps nothing published before the bridge subscribed.
        await bridge.wait_connected(connect_timeout_s)
        yield bridge
    finally:
        stop.set()
        async with asyncio.timeout(stop_timeout_s):
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
