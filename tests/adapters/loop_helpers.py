"""Checks every service running the one consumer loop must pass, on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters import LoopStats, checkpoint, client_options
from core.settings import Settings

WAIT_S = 40.0
POLL_S = 0.05
QUERY_TIMEOUT_S = 10.0


async def committed_total(settings: Settings, group: str, topics: Sequence[str]) -> int:
    """The sum of ``group``'s committed offsets over every partition of ``topics``.

    On topics a test created, that is how many of their records the group has committed.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka, settings.kafka_bootstrap()),
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for topic in topics:
            for p in range(settings.kafka.partitions):
                async with asyncio.timeout(QUERY_TIMEOUT_S):
                    off = await consumer.committed(TopicPartition(topic, p))
                total += max(off or 0, 0)
        return total
    finally:
        await consumer.stop()


class _LoopService(Protocol):
    """A service run by the one consumer loop (processor, detector, alert service)."""

    @property
    def loop_stats(self) -> LoopStats: ...

    async def run(self, *, stop: asyncio.Event | None = None) -> object: ...


async def _wait(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S:g} s waiting for: {what}")
        await asyncio.sleep(POLL_S)


async def check_survives_commit_timeouts(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    service: _LoopService,
    *,
    group: str,
    topics: Sequence[str],
    feed: Callable[[], Awaitable[int]],
) -> None:
    """Offset commits Kafka does not take in time never stop a service (issue 9, finding 7).

    Every commit times out at first (what a broker restart or a commit slower than
    ``COMMIT_TIMEOUT_S`` on Apache Kafka does: ``kafka commit offsets: TimeoutError``);
    the service keeps consuming and handles everything ``feed`` produced. Once commits go
    through again, the next due commit commits all of it, and stop ends the run cleanly.

    Args:
        monkeypatch: the test's monkeypatch (shrinks the commit timeout).
        settings: the service's settings.
        service: the service, not run yet.
        group: the service's consumer group.
        topics: the topics it consumes.
        feed: produces the service's input; returns how many records it produced.
    """
    monkeypatch.setattr(checkpoint, "COMMIT_TIMEOUT_S", 0.0)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop=stop))
    try:
        produced = await feed()

        async def commits_failing() -> bool:
            stats = service.loop_stats
            return task.done() or (stats.records >= produced and stats.commit_failures >= 2)

        await _wait(commits_failing, "every record handled while commits time out")
        assert not task.done(), f"the service stopped: {task.exception()!r}"
        assert service.loop_stats.commits == 0
        monkeypatch.setattr(checkpoint, "COMMIT_TIMEOUT_S", 15.0)

        async def all_committed() -> bool:
            if task.done():
                return True
            return await committed_total(settings, group, topics) == produced

        await _wait(all_committed, "the offsets of every record committed after recovery")
        assert not task.done(), f"the service stopped: {task.exception()!r}"
    finally:
        stop.set()
        async with asyncio.timeout(WAIT_S):
            await task
