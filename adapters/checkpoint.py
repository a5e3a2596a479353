"""Offset bookkeeping for consumer loops: what is durable, and committing it when due.

The contract every ghgwatch consumer follows (STYLE.md 2.9):

1. Poll a batch.
2. Make it durable (database transaction committed; derived events produced and flushed).
3. :meth:`Checkpoint.advance` with that batch: the next offset of each partition becomes
   ``last offset + 1``. Offsets only ever increase.
4. :meth:`Checkpoint.commit_if_due` commits the durable offsets to Kafka every
   ``commit_interval_s`` (and with ``force=True`` on stop).

Hold :attr:`Checkpoint.lock` across steps 2-3 so that a rebalance (see
:class:`CommitOnRevoke`) waits for the batch in flight, then commits exactly what is durable
before the partitions go to another member. A crash between 2 and 4 only means a batch is
delivered again; writers must therefore be idempotent (ghgwatch's are).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from aiokafka.structs import OffsetAndMetadata

from adapters.kafka import kafka_errors
from core.errors import GhgwatchError

__all__ = [
    "COMMIT_TIMEOUT_S",
    "REVOKE_WAIT_S",
    "Checkpoint",
    "CommitOnRevoke",
    "PartitionHook",
]

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_S = 15.0
# How long a revoke waits for the batch in flight; above the writer's own deadline.
REVOKE_WAIT_S = 60.0
_COMMITTED_QUERY_TIMEOUT_S = 10.0

# The group moved on while we were committing: the new owner re-reads from the last commit.
_LOST_GENERATION: tuple[type[BaseException], ...] = (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

PartitionHook = Callable[[set[TopicPartition]], Awaitable[None] | None]


class _HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


class Checkpoint:
    """Durable and committed offsets per partition, and when the next commit is due.

    Args:
        commit_interval_s: commit at most this often (0: after every batch).
        clock: monotonic clock (tests may pass their own).
    """

    def __init__(
        self, commit_interval_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s = commit_interval_s
        self._clock = clock
        self._durable: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = clock()
        self.lock = asyncio.Lock()
        """Held while a batch is made durable and advanced; revokes wait for it."""

    def advance(
        self,
        batch: Mapping[TopicPartition, Sequence[_HasOffset]],
        *,
        assigned: Collection[TopicPartition] | None = None,
    ) -> None:
        """Record that ``batch`` is durable: each partition's next offset is last + 1.

        Args:
            batch: the records just made durable, by partition (``getmany``'s result).
            assigned: when given, partitions outside it (revoked meanwhile) are ignored.
        """
        for tp, records in batch.items():
            if not records or (assigned is not None and tp not in assigned):
                continue
            nxt = records[-1].offset + 1
            if nxt > self._durable.get(tp, -1):
                self._durable[tp] = nxt

    def durable(self, tp: TopicPartition) -> int | None:
        """The next offset after what is durable in ``tp``, None when nothing is known."""
        return self._durable.get(tp)

    def committed(self, tp: TopicPartition) -> int | None:
        """The offset this checkpoint last committed for ``tp``, None when none yet."""
        return self._committed.get(tp)

    def pending(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Durable offsets not committed yet, optionally only for ``partitions``."""
        wanted = set(partitions) if partitions is not None else None
        return {
            tp: off
            for tp, off in self._durable.items()
            if (wanted is None or tp in wanted) and off > self._committed.get(tp, -1)
        }

    def due(self) -> bool:
        """True when ``commit_interval_s`` has passed since the last commit."""
        return self._clock() - self._last_commit >= self._interval_s

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is known about ``partitions`` (they were revoked or newly assigned)."""
        for tp in partitions:
            self._durable.pop(tp, None)
            self._committed.pop(tp, None)

    async def commit(
        self, consumer: Any, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Commit the durable offsets of assigned partitions now.

        Args:
            consumer: the ``AIOKafkaConsumer`` of this group.
            partitions: only these (default: every assigned partition).

        Returns:
            The offsets committed (empty when nothing was pending or the group rebalanced
            meanwhile; the new owner then re-reads from the previous commit).

        Raises:
            BrokerUnavailable: Kafka could not be reached within ``COMMIT_TIMEOUT_S``.
            FatalError: Kafka refused the commit for another reason.
        """
        assigned = set(consumer.assignment())
        chosen = assigned if partitions is None else assigned & set(partitions)
        offsets = self.pending(chosen)
        self._last_commit = self._clock()
        if not offsets:
            return {}
        try:
            with kafka_errors("commit offsets"):
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    await consumer.commit(
                        {tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()}
                    )
        except GhgwatchError as exc:
            if isinstance(exc.__cause__, _LOST_GENERATION):
                log.warning(
                    "offset commit skipped: group rebalanced",
                    partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in offsets),
                    error=str(exc.__cause__),
                )
                return {}
            raise
        for tp, off in offsets.items():
            if off > self._committed.get(tp, -1):
                self._committed[tp] = off
        return offsets

    async def commit_if_due(
        self, consumer: Any, *, force: bool = False
    ) -> dict[TopicPartition, int]:
        """Commit the durable offsets when the interval has passed (or ``force``).

        Returns:
            The offsets committed (empty when not due or nothing pending).

        Raises:
            BrokerUnavailable: Kafka could not be reached within ``COMMIT_TIMEOUT_S``.
            FatalError: Kafka refused the commit for another reason.
        """
        if not force and not self.due():
            return {}
        return await self.commit(consumer)

    async def rewind(self, consumer: Any, partitions: Iterable[TopicPartition]) -> None:
        """Seek each partition back to the first offset that is not durable yet.

        That is the durable position when known, else the group's committed offset, else
        the beginning of the partition (``auto_offset_reset=earliest``).

        Raises:
            BrokerUnavailable: Kafka could not be asked for the committed offset in time.
        """
        for tp in partitions:
            target = self._durable.get(tp, self._committed.get(tp))
            if target is None:
                with kafka_errors("fetch committed offset"):
                    async with asyncio.timeout(_COMMITTED_QUERY_TIMEOUT_S):
                        target = await consumer.committed(tp)
            if target is None:
                with kafka_errors("seek to beginning"):
                    async with asyncio.timeout(_COMMITTED_QUERY_TIMEOUT_S):
                        await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, target)


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Rebalance listener: on revoke, wait for the batch in flight and commit what is durable.

    Steps on revoke: (1) take :attr:`Checkpoint.lock` (at most ``REVOKE_WAIT_S``), (2) commit
    the revoked partitions' durable offsets, (3) in a ``finally``, forget them and call
    ``on_revoked`` (e.g. to drop per-partition windows). On assignment, forget what was known
    about the partitions and call ``on_assigned``.

    Args:
        checkpoint: the loop's checkpoint.
        consumer: the ``AIOKafkaConsumer`` it belongs to.
        on_revoked: optional hook after revoked partitions are committed.
        on_assigned: optional hook for newly assigned partitions.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        consumer: Any,
        *,
        on_revoked: PartitionHook | None = None,
        on_assigned: PartitionHook | None = None,
    ) -> None:
        self._checkpoint = checkpoint
        self._consumer = consumer
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit the revoked partitions' durable offsets before they move."""
        if not revoked:
            return
        cp = self._checkpoint
        try:
            async with asyncio.timeout(REVOKE_WAIT_S):
                async with cp.lock:
                    done = await cp.commit(self._consumer, revoked)
            log.info(
                "partitions revoked",
                partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
                committed={f"{tp.topic}[{tp.partition}]": off for tp, off in done.items()},
            )
        except (TimeoutError, GhgwatchError) as exc:
            # The new owner re-reads from the last commit; storage is idempotent.
            log.warning("commit on revoke failed", error=str(exc))
        finally:
            cp.forget(revoked)
            if self._on_revoked is not None:
                res = self._on_revoked(set(revoked))
                if res is not None:
                    await res

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Start the assigned partitions from what the group committed."""
        self._checkpoint.forget(assigned)
        log.info(
            "partitions assigned",
            partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned),
        )
        if self._on_assigned is not None:
            res = self._on_assigned(set(assigned))
            if res is not None:
                await res
