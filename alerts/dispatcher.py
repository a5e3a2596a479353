"""The outbox dispatcher: claims due notifications, sends them, records every attempt.

Delivery guarantee (numbered as it happens):

1. The alert change and its outbox rows commit in one transaction (:mod:`alerts.writes`), so
   a notification exists if and only if the change does; the Kafka offset is committed after.
2. A sender claims a row in its own transaction *before* sending (:meth:`Outbox.claim`):
   ``status='sending'``, ``attempts+1`` and a short lease (``alerts.lease_s``), renewed every
   third of it while the attempt runs (:meth:`Outbox.renew`).
3. Just before sending it commits ``send_started_at`` (:meth:`Outbox.start`): the attempt has
   begun. Sends that get a slot at the same moment share that commit.
4. It sends, then records the attempt and marks the row (:meth:`Outbox.finish`): ``sent``, or
   ``pending`` with a capped, jittered backoff, or ``failed`` after ``alerts.max_attempts`` or
   a permanent refusal (:class:`NotifyRejected`).

A crash before step 2 leaves the row pending: it is sent once after the restart, at once. A
crash between steps 2 and 3 leaves it claimed but not begun: it is sent once when the lease
runs out (at most ``lease_s`` later, not renewed by a dead sender). A crash between steps 3
and 4 - the receiver may or may not have the notification - is told apart by
``send_started_at``, and what happens is per notifier type:

- receivers that de-duplicate on the idempotency key (webhook ``Idempotency-Key`` header and
  JSON field, e-mail ``Message-ID``, MQTT and Grafana payload field) get it again when the
  lease runs out: each sees exactly one notification per key;
- receivers that cannot (DingTalk and WeCom robots, :data:`NO_DEDUP_CHANNELS`) do not get it
  again: the row becomes ``unknown``, with a ``notification_unknown`` alert event and the
  ``ghgwatch_alerts_notifications_unknown`` metric, so a human can check; at most once.

The same key is unique in the outbox, so a redelivered detection can never queue a second
notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from alerts.exceptions import NotifyFailed, NotifyRejected
from alerts.metrics import AlertMetrics
from alerts.notifiers import NO_DEDUP_CHANNELS, Notifier
from alerts.outbox import Outbox, OutboxItem, Unsettled
from alerts.store import AlertStore
from core.errors import TransientError
from core.settings import AlertsSettings

__all__ = ["DispatchStats", "Dispatcher", "backoff_s", "wait_any"]

log = structlog.get_logger(__name__)

JITTER = 0.2  # +-20 % so many failed rows do not retry in lockstep
# Leases are renewed this many times per lease period, so one late renewal does not lose it.
LEASE_RENEWALS_PER_LEASE = 3


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
        unknown: an earlier sender's attempt was interrupted mid-send to a receiver that cannot
            de-duplicate; not re-sent.
    """

    sent: int = 0
    retried: int = 0
    failed: int = 0
    stale: int = 0
    unknown: int = 0


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
        self._renew_every_s = cfg.lease_s / LEASE_RENEWALS_PER_LEASE
        self._next_settle_at = datetime.min.replace(tzinfo=UTC)
        self._starter = _Starter(self._outbox)
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
        now = now or datetime.now(UTC)
        if now >= self._next_settle_at:
            # Only an expired lease makes a row settleable, so looking once per renewal period
            # is enough, and keeps this transaction off the path of every new notification.
            self._next_settle_at = now + timedelta(seconds=self._renew_every_s)
            for u in await self._outbox.settle_interrupted(now, sorted(NO_DEDUP_CHANNELS)):
                self._count_unknown(u)
        items = await self._outbox.claim(self._cfg.dispatch_batch, now, sorted(NO_DEDUP_CHANNELS))
        if items:
            in_flight = {item.outbox_id: item for item in items}
            renewer = asyncio.create_task(self._renew(in_flight))
            try:
                # Every send runs to its end (and keeps its lease renewed) even when another
                # one's database write failed; that failure is raised after.
                results = await asyncio.gather(
                    *(self._send(item, in_flight) for item in items), return_exceptions=True
                )
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return len(items)

    def _count_unknown(self, u: Unsettled) -> None:
        self.stats.unknown += 1
        if self._metrics is not None:
            self._metrics.count_delivery(u.channel, "unknown", None)
        log.error(
            "notification outcome unknown: send interrupted, not re-sent (receiver cannot"
            " de-duplicate); check the receiver",
            alert_id=u.alert_id,
            target=u.target,
            attempt=u.attempt,
            outbox_id=u.outbox_id,
        )

    async def _renew(self, in_flight: dict[int, OutboxItem]) -> None:
        """Renew the leases of the attempts in flight until cancelled (the sender is alive)."""
        while True:
            await asyncio.sleep(self._renew_every_s)
            try:
                await self._outbox.renew(list(in_flight.values()), datetime.now(UTC))
            except TransientError as exc:
                # The next renewal may pass; if none does, the lease runs out and the row is
                # settled as after a crash (re-sent or ``unknown``), never lost.
                log.warning("outbox lease renewal failed", error=str(exc))

    async def _send(self, item: OutboxItem, in_flight: dict[int, OutboxItem]) -> None:
        try:
            await self._attempt(item)
        finally:
            in_flight.pop(item.outbox_id, None)

    async def _attempt(self, item: OutboxItem) -> None:
        async with self._sem:
            if not await self._starter.start(item):
                self.stats.stale += 1  # the lease ran out while waiting for a slot
                return
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


class _Starter:
    """Group commit of "attempt started": sends that get their slot together share one
    transaction (:meth:`Outbox.start`), and none begins before it is committed."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._waiting: list[tuple[OutboxItem, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def start(self, item: OutboxItem) -> bool:
        """Wait until the start of ``item``'s attempt is committed.

        Returns:
            False when the claim was lost meanwhile (do not send).

        Raises:
            TransientError: the database did not take it (do not send; the lease runs out).
        """
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, fut))
        if self._flusher is None or self._flusher.done():
            # The task runs on the next loop turn, after every sender that got its slot in
            # this one has queued itself: they all share the commit.
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                started = await self._outbox.start([i for i, _ in batch], datetime.now(UTC))
            except Exception as exc:  # handed to every waiting sender, which raises it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for item, fut in batch:
                if not fut.done():
                    fut.set_result(item.outbox_id in started)


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
