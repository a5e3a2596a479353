"""The alert service: detections -> alerts (store) -> notifications (dispatcher), plus sweeps.

One process runs three tasks sharing one store:

- the consumer loop (:class:`adapters.ConsumerLoop`, STYLE.md 2.8): poll detections, decode
  (bad records are logged and skipped), apply the batch in one database transaction together
  with its outbox rows, then advance the checkpoint, which commits the offsets after every
  batch (``alerts.commit_interval_s``); a slow database rewinds the batch and waits;
- the sweeper: every ``alerts.tick_s``, auto-resolve alerts whose hold time passed and
  escalate unacknowledged critical alerts;
- the dispatcher (:mod:`alerts.dispatcher`), woken as soon as a change queued notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import structlog
from pydantic import ValidationError

from adapters import (
    Batch,
    ConsumedRecord,
    ConsumerLoop,
    ConsumerService,
    start_wait_s,
    wait_for_database,
)
from alerts.dispatcher import Dispatcher, wait_any
from alerts.grafana import GrafanaAnnotator
from alerts.metrics import AlertMetrics
from alerts.notifiers import Notifier, build_notifiers
from alerts.store import AlertStore
from core.errors import TransientError
from core.settings import Settings
from wire.events import DetectionRecord

__all__ = ["AlertService", "ServiceStats", "decode_detections"]

log = structlog.get_logger(__name__)

PAYLOAD_EXCERPT_CHARS = 200
HTTP_MAX_CONNECTIONS = 32
STOP_GRACE_S = 10.0


@dataclass
class ServiceStats:
    """Counts since the service started."""

    detections: int = 0
    invalid: int = 0
    new_alerts: int = 0
    duplicates: int = 0
    resolved: int = 0
    escalated: int = 0
    sent: int = 0


def decode_detections(records: Sequence[ConsumedRecord]) -> tuple[list[DetectionRecord], int]:
    """Decode Kafka values into detections; undecodable ones are logged and skipped.

    Args:
        records: raw records in partition order.

    Returns:
        The detections in order, and how many records were skipped.
    """
    out: list[DetectionRecord] = []
    bad = 0
    for r in records:
        try:
            out.append(DetectionRecord.model_validate_json(r.value or b""))
        except ValidationError as exc:
            bad += 1
            log.warning(
                "undecodable detection skipped",
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                error=str(exc.errors()[:1]),
                payload=(r.value or b"")[:PAYLOAD_EXCERPT_CHARS].decode(errors="replace"),
            )
    return out, bad


class AlertService(ConsumerService):
    """Consumes detections, keeps alerts, notifies on-call staff.

    Args:
        settings: the whole settings object (kafka, db, alerts, mqtt for siren targets,
            metrics).

    Attributes:
        metrics: this service's Prometheus series (served while running when
            ``metrics.enabled``).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._cfg = settings.alerts
        self.stats = ServiceStats()
        self.metrics = AlertMetrics()
        self._wake = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self._store: AlertStore | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop = ConsumerLoop(
            settings,
            self._cfg,
            name="alert service",
            topics=[settings.kafka.detections_topic],
            handle=self._handle,
            metrics=self.metrics,
            health=self._check_tasks,
        )

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        timeout_s: float | None = None,
        max_detections: int | None = None,
    ) -> ServiceStats:
        """Run until ``stop`` is set, ``timeout_s`` passes or ``max_detections`` were handled.

        What a stop leaves behind, in order: the consumer stops polling after its current
        batch (whose transaction and offset commit complete), the sweeper and dispatcher stop
        after their current round, every connection closes. Notifications not sent yet stay
        in the outbox for the next start.

        Args:
            stop: set it to stop (signal handlers do only that).
            timeout_s: stop after this long.
            max_detections: stop after handling this many detections (tests, benchmarks).

        Returns:
            Counts of what was done.

        Raises:
            FatalError: bad configuration, refused credentials, missing schema.
        """
        stop = stop or asyncio.Event()
        inner = asyncio.Event()
        s = self._settings
        await wait_for_database(s.db_url(), start_wait_s(s.db.start_timeout_s, timeout_s))
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(
                AlertStore(s.db_url(), self._cfg, s.db, s.console)
            )
            self._store = store
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    timeout=self._cfg.send_timeout_s,
                    limits=httpx.Limits(max_connections=HTTP_MAX_CONNECTIONS),
                )
            )
            notifiers: dict[str, Notifier] = dict(build_notifiers(self._cfg, http, s.mqtt_url()))
            if self._cfg.grafana_url:
                notifiers["grafana"] = GrafanaAnnotator(self._cfg)
            for n in notifiers.values():
                stack.push_async_callback(n.aclose)
            tasks = self._tasks
            if self._cfg.dispatch_enabled:
                self._dispatcher = Dispatcher(store, notifiers, self._cfg, self._wake, self.metrics)
                tasks.append(
                    asyncio.create_task(self._dispatcher.run(inner), name="alerts-dispatch")
                )
            tasks.append(asyncio.create_task(self._sweep_loop(store, inner), name="alerts-sweep"))
            log.info(
                "alert service running",
                topic=s.kafka.detections_topic,
                notifiers=sorted(notifiers),
                dispatch=self._cfg.dispatch_enabled,
            )
            try:
                await self._loop.run(stop, max_items=max_detections, timeout_s=timeout_s)
            finally:
                inner.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_GRACE_S):
                        await asyncio.gather(*tasks, return_exceptions=True)
                for t in tasks:
                    t.cancel()
                if self._dispatcher is not None:
                    self.stats.sent = self._dispatcher.stats.sent
                self._store = None
        log.info("alert service stopped", **vars(self.stats))
        return self.stats

    def _check_tasks(self) -> None:
        """Raise the error of a helper task that crashed: the service stops loudly."""
        for t in self._tasks:
            if t.done():
                t.result()

    async def _handle(self, batch: Batch) -> int:
        """Decode and apply one batch of detections; returns the detections handled.

        Raises:
            StorageBackpressure: the alert store is slow (the loop rewinds the batch).
        """
        assert self._store is not None, "outside run()"
        records = [rec for recs in batch.values() for rec in recs]
        detections, bad = decode_detections(records)
        self.stats.invalid += bad
        self.metrics.invalid.inc(bad)
        if detections:
            result = await self._store.apply_detections(detections, datetime.now(UTC))
            self.stats.new_alerts += result.new_alerts
            self.stats.duplicates += result.duplicates
            self.metrics.count_applied(
                detections=len(detections),
                duplicates=result.duplicates,
                opened=result.opened_by_severity,
            )
            if result.queued:
                self._wake.set()
        self.stats.detections += len(detections)
        return len(detections)

    async def _sweep_loop(self, store: AlertStore, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                result = await store.sweep(datetime.now(UTC))
            except TransientError as exc:
                log.warning("alert sweep failed; retrying", error=str(exc))
                await wait_any(stop, None, exc.retry_after)
                continue
            self.stats.resolved += result.resolved
            self.stats.escalated += result.escalated
            self.metrics.count_swept(
                resolved=result.resolved_by_severity, escalated=result.escalated_by_severity
            )
            with contextlib.suppress(TransientError):  # a gauge never stops the sweeper
                self.metrics.outbox_pending.set(await store.outbox_pending_count())
            if result.queued:
                self._wake.set()
            await wait_any(stop, None, self._cfg.tick_s)
