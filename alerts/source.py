"""Kafka adapter for the alert service: the detections consumer (poll, rewind, commit)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters import ensure_topics, kafka_errors, make_consumer, started_client
from core.settings import Settings

__all__ = ["DetectionSource", "RawRecord"]

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka record from the detections topic, undecoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class DetectionSource:
    """Consumer-group member on ``kafka.detections_topic`` with manual commits.

    Offsets are committed only by :meth:`commit`, which the service calls after the database
    transaction holding the batch's alert changes has committed.

    Args:
        settings: the whole settings (kafka connection, alerts consumer tuning).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.kafka.detections_topic
        self._consumer: AIOKafkaConsumer | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def topic(self) -> str:
        """The detections topic consumed."""
        return self._topic

    async def __aenter__(self) -> DetectionSource:
        s = self._settings
        bootstrap = s.kafka_bootstrap()
        await ensure_topics(s.kafka, bootstrap, [self._topic])
        consumer = make_consumer(
            s.kafka,
            bootstrap,
            group_id=s.alerts.group_id,
            session_timeout_ms=s.alerts.session_timeout_ms,
            max_poll_interval_ms=s.alerts.max_poll_interval_ms,
            topics=[self._topic],
            fetch_max_wait_ms=s.alerts.fetch_max_wait_ms,
        )
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(
            started_client(
                consumer,
                "detections consumer",
                start_timeout_s=s.kafka.request_timeout_s,
                stop_timeout_s=s.kafka.request_timeout_s,
            )
        )
        self._stack, self._consumer = stack, consumer
        log.info("detections consumer started", topic=self._topic, group=s.alerts.group_id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack, self._consumer = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _c(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "DetectionSource used outside `async with`"
        return self._consumer

    async def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Fetch up to ``max_records``, waiting at most ``timeout_ms`` when none are ready.

        Raises:
            BrokerUnavailable: the cluster is unreachable (retry later).
        """
        with kafka_errors("poll detections"):
            async with asyncio.timeout(timeout_ms / 1000 + self._settings.kafka.request_timeout_s):
                batch: dict[Any, list[Any]] = await self._c().getmany(
                    timeout_ms=timeout_ms, max_records=max_records
                )
        out = [
            RawRecord(tp.topic, tp.partition, m.offset, m.key, m.value)
            for tp, msgs in batch.items()
            for m in msgs
        ]
        return out

    async def commit(self, records: list[RawRecord]) -> None:
        """Commit, per partition, the offset after the last of ``records``.

        Raises:
            BrokerUnavailable: the commit did not reach the cluster (records may come again;
                the store ignores repeats).
            FatalError: the group was rebalanced away from us or refused the commit.
        """
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        if not offsets:
            return
        with kafka_errors("commit detections"):
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self._c().commit(offsets)

    def rewind(self, records: list[RawRecord]) -> None:
        """Seek each partition back to the first of ``records`` (they were not stored)."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            self._c().seek(tp, offset)
