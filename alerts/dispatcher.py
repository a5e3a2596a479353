"""The outbox dispatcher: claims due notifications, sends them, records every attempt.

Delivery guarantee (numbered as it happens):

1. The alert change and its outbox rows commit in one transaction (:mod:`alerts.writes`), so
   a notification exists if and only if the change does; the Kafka offset is committed after.
2. A sender claims a row in its own transaction *before* sending (:meth:`Outbox.claim`):
   ``status='sending'``, ``attempts+1`` and a lease (``alerts.lease_s``).
3. It sends, then records the attempt and marks the row (:meth:`Outbox.finish`): ``sent``, or
   ``pending`` with a capped, jittered backoff, or ``failed`` after ``alerts.max_attempts`` or
   a permanent refusal (:class:`NotifyRejected`).

A crash before step 2 leaves the row pending: it is sent once after the restart. A crash after
step 2 but before the send leaves it claimed: it is sent once when the lease runs out. Only a
crash in the instant between the receiver accepting and step 3 committing can repeat a send;
every send carries the row's idempotency key (``Idempotency-Key`` header, JSON field, MQTT
field, e-mail ``Message-ID``) so the repeat is recognisable and receivers that honour the key
see exactly one notification. The same key is unique in the outbox, so a redelivered detection
can never queue a second notification.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from alerts.exceptions import NotifyFailed, NotifyRejected
from alerts.metrics import AlertMetrics
from alerts.notifiers import Notifier
from alerts.outbox import OutboxItem
from alerts.store import AlertStore
from core.errors import TransientError
from core.settings import AlertsSettings

__all__ = ["DispatchStats", "Dispatcher", "backoff_s", "wait_any"]

log = structlog.get_logger(__name__)

JITTER = 0.2  # +-20 % so many failed rows do not retry in lockstep


def backoff_s(attempt: int, base_s: float, max_s: float, *, jitter: float = JITTER) -> float:
    """Capped exponential backoff with jitter for the given (1-based) attempt number.

    Args:
        attempt: the attempt that just failed (1 = first).
        base_s: delay after the first failure.
        max_s: the cap.
        jitter: relative jitter (0 for none).

    Returns:
        Seconds to wait before the next attempt.
    """
    delay: float = min(max_s, base_s * 2.0 ** max(attempt - 1, 0))
    if jitter:
        delay *= 1 + random.uniform(-jitter, jitter)
    return min(max(delay, 0.0), max_s)


@dataclass
class DispatchStats:
    """Counts since the dispatcher started, by what became of each claimed row.

    Attributes:
        sent: delivered.
        retried: failed, due again after a backoff.
        failed: given up (refused for good, or ``alerts.max_attempts`` reached).
        stale: reported after the claim's lease ran out (another sender took the row over).
    """

    sent: int = 0
    retried: int = 0
    failed: int = 0
    stale: int = 0


class Dispatcher:
    """Sends outbox rows through the configured notifiers.

    Args:
        store: the open alert store (the dispatcher uses its :attr:`~AlertStore.outbox`).
        notifiers: target name -> notifier (including ``grafana`` when configured).
        cfg: the ``alerts`` section (batch, concurrency, lease, backoff, attempts).
        wake: set by whoever queued new rows, to send at once instead of at the next poll.
        metrics: where to count deliveries by notifier type (the service's), if anywhere.
    """

    def __init__(
        self,
        store: AlertStore,
        notifiers: Mapping[str, Notifier],
        cfg: AlertsSettings,
        wake: asyncio.Event,
        metrics: AlertMetrics | None = None,
    ) -> None:
        self._outbox = store.outbox
        self._metrics = metrics
        self._notifiers = notifiers
        self._cfg = cfg
        self._wake = wake
        self._sem = asyncio.Semaphore(cfg.dispatch_concurrency)
        self.stats = DispatchStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; waits at most ``dispatch_poll_s`` between rounds."""
        while not stop.is_set():
            try:
                claimed = await self.dispatch_once()
            except TransientError as exc:
                log.warning("outbox dispatch failed; retrying", error=str(exc))
                claimed = 0
                await wait_any(stop, None, exc.retry_after)
                continue
            if claimed:
                continue  # there may be more due right away
            await wait_any(stop, self._wake, self._cfg.dispatch_poll_s)
            self._wake.clear()

    async def dispatch_once(self, now: datetime | None = None) -> int:
        """Claim one batch of due rows and send them concurrently.

        Returns:
            How many rows were claimed.
        """
        items = await self._outbox.claim(self._cfg.dispatch_batch, now or datetime.now(UTC))
        if items:
            await asyncio.gather(*(self._send(item) for item in items))
        return len(items)

    async def _send(self, item: OutboxItem) -> None:
        async with self._sem:
            started = datetime.now(UTC)
            notifier = self._notifiers.get(item.target)
            error: str | None = None
            retry_at: datetime | None = None
            response: str | None = None
            annotation_id: int | None = None
            ok = False
            if notifier is None:
                error = f"no notifier named {item.target!r} is configured"
            else:
                try:
                    async with asyncio.timeout(self._cfg.send_timeout_s * 2):
                        result = await notifier.send(item.message, item.annotation_id)
                    ok = True
                    response = result.response
                    annotation_id = result.annotation_id
                except NotifyRejected as exc:
                    error = str(exc)
                except NotifyFailed as exc:
                    error = str(exc)
                    retry_at = self._retry_at(item.attempt, exc.retry_after)
                except TimeoutError:
                    error = f"{item.target}: no answer within {self._cfg.send_timeout_s * 2} s"
                    retry_at = self._retry_at(item.attempt, 0.0)
            finished = datetime.now(UTC)
            status = await self._outbox.finish(
                item,
                started_at=started,
                finished_at=finished,
                ok=ok,
                error=error,
                response=response,
                retry_at=retry_at,
                annotation_id=annotation_id,
            )
        if self._metrics is not None:
            caused_by_detection = item.event in ("opened", "severity_raised")
            self._metrics.count_delivery(
                item.channel,
                status,
                (finished - item.message.at).total_seconds() if caused_by_detection else None,
            )
        where = {"alert_id": item.alert_id, "target": item.target, "attempt": item.attempt}
        if status == "sent":
            self.stats.sent += 1
            log.info("notification sent", alert_event=item.event, **where)
        elif status == "pending":
            self.stats.retried += 1
            at = retry_at.isoformat() if retry_at else None
            log.warning("notification failed; will retry", retry_at=at, error=error, **where)
        elif status == "failed":
            self.stats.failed += 1
            log.error("notification failed for good", error=error, **where)
        else:
            self.stats.stale += 1

    def _retry_at(self, attempt: int, retry_after: float) -> datetime | None:
        if attempt >= self._cfg.max_attempts:
            return None
        delay = max(backoff_s(attempt, self._cfg.retry_base_s, self._cfg.retry_max_s), retry_after)
        return datetime.now(UTC) + timedelta(seconds=min(delay, self._cfg.retry_max_s))


async def wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout_s: float) -> None:
    """Wait until ``stop`` or ``wake`` is set, or ``timeout_s`` passes."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
