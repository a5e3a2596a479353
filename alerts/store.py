"""The alert store: one open database shared by the writes, the outbox and the read queries.

:class:`AlertStore` is what the service, the API and the console open. It holds no SQL of its
own; each method hands over to the module doing that job:

- :mod:`alerts.writes`: alert state changes and their history, each with its outbox rows in
  one transaction (decisions from the pure :mod:`alerts.lifecycle`, notifications planned by
  the pure :mod:`alerts.notices`);
- :mod:`alerts.outbox`: the notification queue the dispatcher claims and marks;
- :mod:`alerts.reads`: the read queries of the API and console.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from alerts.models import AlertDetail, AlertFilter, AlertView, SilenceView
from alerts.outbox import Outbox, OutboxItem
from alerts.pg import AlertDb, db_errors
from alerts.reads import AlertReads
from alerts.writes import AlertWrites, ApplyResult, SweepResult
from core.errors import ConfigurationError
from core.settings import AlertsSettings, DbSettings
from wire.events import DetectionRecord

__all__ = [
    "AlertStore",
    "ApplyResult",
    "OutboxItem",
    "SweepResult",
    "db_errors",
]


class AlertStore:
    """Alerts, their history and the notification outbox in PostgreSQL.

    The parts are reachable as :attr:`writes`, :attr:`outbox` and :attr:`reads`; the methods
    here delegate to them, under the names the service and the tools have always called.

    Args:
        url: database URL.
        cfg: the ``alerts`` settings section (rules, routes, hold and escalation times).
        db: the ``db`` settings section (pool size, command timeout).

    Raises:
        ConfigurationError: a route names a notifier that is not configured.

    Attributes:
        writes: the write transactions.
        outbox: the notification queue.
        reads: the read queries.
    """

    def __init__(self, url: str, cfg: AlertsSettings, db: DbSettings | None = None) -> None:
        channels = {n.name: n.type for n in cfg.notifiers}
        for route in cfg.routes:
            for name in (*route.targets, *route.escalation):
                if name not in channels:
                    raise ConfigurationError(
                        f"alerts route {route.name!r} names unknown notifier {name!r}"
                    )
        self._db = AlertDb(url, db or DbSettings())
        self.writes = AlertWrites(self._db, cfg, channels)
        self.outbox = Outbox(self._db, cfg.lease_s)
        self.reads = AlertReads(self._db)

    async def __aenter__(self) -> AlertStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect the pool.

        Raises:
            FatalError: refused credentials or unknown database.
            StorageBackpressure: the server cannot be reached.
        """
        await self._db.open()

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        await self._db.close()

    # ----------------------------------------------------------------- writes

    async def apply_detections(
        self, records: Sequence[DetectionRecord], now: datetime
    ) -> ApplyResult:
        """:meth:`AlertWrites.apply_detections`: a batch of detections, in one transaction."""
        return await self.writes.apply_detections(records, now)

    async def sweep(self, now: datetime) -> SweepResult:
        """:meth:`AlertWrites.sweep`: auto-resolve and escalate what is due."""
        return await self.writes.sweep(now)

    async def acknowledge(
        self, alert_id: int, actor: str, note: str | None, now: datetime
    ) -> AlertView:
        """:meth:`AlertWrites.acknowledge` an open alert."""
        return await self.writes.acknowledge(alert_id, actor, note, now)

    async def resolve(
        self, alert_id: int, actor: str, note: str | None, now: datetime
    ) -> AlertView:
        """:meth:`AlertWrites.resolve` an alert by hand."""
        return await self.writes.resolve(alert_id, actor, note, now)

    async def silence_alert(
        self,
        alert_id: int,
        actor: str,
        duration_s: float | None,
        reason: str,
        now: datetime,
    ) -> SilenceView:
        """:meth:`AlertWrites.silence_alert`: silence an alert's site and group."""
        return await self.writes.silence_alert(alert_id, actor, duration_s, reason, now)

    async def create_silence(
        self,
        *,
        kind: str,
        network: str | None,
        site: str | None,
        device_id: str | None,
        group: str | None,
        starts_at: datetime,
        ends_at: datetime,
        reason: str,
        actor: str,
    ) -> SilenceView:
        """:meth:`AlertWrites.create_silence`: a silence or maintenance window."""
        return await self.writes.create_silence(
            kind=kind,
            network=network,
            site=site,
            device_id=device_id,
            group=group,
            starts_at=starts_at,
            ends_at=ends_at,
            reason=reason,
            actor=actor,
        )

    async def end_silence(self, silence_id: int, now: datetime) -> SilenceView:
        """:meth:`AlertWrites.end_silence`: end a silence now."""
        return await self.writes.end_silence(silence_id, now)

    # ----------------------------------------------------------------- reads

    async def list_silences(self, now: datetime, *, active_only: bool = True) -> list[SilenceView]:
        """:meth:`AlertReads.list_silences`, newest first."""
        return await self.reads.list_silences(now, active_only=active_only)

    async def list_alerts(self, flt: AlertFilter) -> list[AlertView]:
        """:meth:`AlertReads.list_alerts`, newest first."""
        return await self.reads.list_alerts(flt)

    async def get_alert(self, alert_id: int) -> AlertDetail:
        """:meth:`AlertReads.get_alert`: one alert with its history and notifications."""
        return await self.reads.get_alert(alert_id)

    # ----------------------------------------------------------------- outbox

    async def claim_outbox(self, limit: int, now: datetime) -> list[OutboxItem]:
        """:meth:`Outbox.claim`: lease due rows for sending."""
        return await self.outbox.claim(limit, now)

    async def finish_outbox(
        self,
        item: OutboxItem,
        *,
        started_at: datetime,
        finished_at: datetime,
        ok: bool,
        error: str | None = None,
        response: str | None = None,
        retry_at: datetime | None = None,
        annotation_id: int | None = None,
    ) -> str:
        """:meth:`Outbox.finish`: record an attempt; returns the row's new status."""
        return await self.outbox.finish(
            item,
            started_at=started_at,
            finished_at=finished_at,
            ok=ok,
            error=error,
            response=response,
            retry_at=retry_at,
            annotation_id=annotation_id,
        )

    async def outbox_status_counts(self) -> dict[str, int]:
        """:meth:`Outbox.status_counts`: rows per status."""
        return await self.outbox.status_counts()

    async def outbox_pending_count(self) -> int:
        """:meth:`Outbox.pending_count`: rows waiting or being sent."""
        return await self.outbox.pending_count()
