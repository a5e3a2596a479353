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

import structlog

from alerts.links import LinkSigner
from alerts.outbox import Outbox, OutboxItem
from alerts.pg import AlertDb, db_errors
from alerts.reads import AlertReads
from alerts.web.reads import WebReads
from alerts.writes import AlertWrites, ApplyResult, SweepResult
from core.errors import ConfigurationError, FatalError
from core.settings import AlertsSettings, ConsoleSettings, DbSettings
from wire.events import DetectionRecord

__all__ = [
    "AlertStore",
    "ApplyResult",
    "OutboxItem",
    "SweepResult",
    "db_errors",
]

log = structlog.get_logger(__name__)


class AlertStore:
    """Alerts, their history and the notification outbox in PostgreSQL.

    The parts are reachable as :attr:`writes`, :attr:`outbox` and :attr:`reads`, and their
    methods as the store's own, under the names callers have always used. The service's
    three are methods of the class (:meth:`apply_detections`, :meth:`sweep`,
    :meth:`outbox_pending_count`); the others are the parts' bound methods:

    - ``acknowledge``, ``resolve``, ``silence_alert``, ``create_silence``, ``end_silence``:
      :class:`~alerts.writes.AlertWrites`;
    - ``list_alerts``, ``get_alert``, ``list_silences``: :class:`~alerts.reads.AlertReads`;
    - ``claim_outbox``, ``finish_outbox``, ``outbox_status_counts``:
      :class:`~alerts.outbox.Outbox` ``claim``, ``finish``, ``status_counts``.

    Args:
        url: database URL.
        cfg: the ``alerts`` settings section (rules, routes, hold and escalation times).
        db: the ``db`` settings section (pool size, command timeout).
        console: the ``console`` settings section (link key, public URL, link lifetime).

    Raises:
        ConfigurationError: a route names a notifier that is not configured.

    Attributes:
        writes: the write transactions.
        outbox: the notification queue.
        reads: the read queries.
        web: the console's read queries (sources, dead letters, detections, readings).
        links: signs the acknowledgement links of notifications.
    """

    def __init__(
        self,
        url: str,
        cfg: AlertsSettings,
        db: DbSettings | None = None,
        console: ConsoleSettings | None = None,
    ) -> None:
        self._console = console or ConsoleSettings()
        base = self._console.public_url or f"http://{cfg.api_host}:{cfg.api_port}"
        self.links = LinkSigner(base, self._console.link_ttl_s, cfg.ack_url_template)
        channels = {n.name: n.type for n in cfg.notifiers}
        for route in cfg.routes:
            for name in (*route.targets, *route.escalation):
                if name not in channels:
                    raise ConfigurationError(
                        f"alerts route {route.name!r} names unknown notifier {name!r}"
                    )
        self._db = AlertDb(url, db or DbSettings())
        self.writes = AlertWrites(self._db, cfg, channels, self.links)
        self.outbox = Outbox(self._db, cfg.lease_s)
        self.reads = AlertReads(self._db)
        self.web = WebReads(self._db)
        # The parts' methods under the names the API, the console and the tests call; the
        # same bound methods, so their signatures and documentation are the parts' own.
        self.acknowledge = self.writes.acknowledge
        self.resolve = self.writes.resolve
        self.silence_alert = self.writes.silence_alert
        self.create_silence = self.writes.create_silence
        self.end_silence = self.writes.end_silence
        self.list_alerts = self.reads.list_alerts
        self.get_alert = self.reads.get_alert
        self.list_silences = self.reads.list_silences
        self.claim_outbox = self.outbox.claim
        self.finish_outbox = self.outbox.finish
        self.outbox_status_counts = self.outbox.status_counts

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
        try:
            await self.link_key()
        except FatalError:  # the schema is not there yet; the first query says so too
            log.warning("no console_keys table (run `ghgwatch db migrate`): no links until then")

    async def link_key(self) -> bytes:
        """The HMAC key of links and sessions (``console.signing_key`` or the database's)."""
        if self.links.key is None:
            secret = self._console.signing_key
            configured = secret.get_secret_value().encode() if secret is not None else None
            self.links.key = await self.writes.link_key(configured)
        return self.links.key

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        await self._db.close()

    async def apply_detections(
        self, records: Sequence[DetectionRecord], now: datetime
    ) -> ApplyResult:
        """A batch of detections, in one transaction (:meth:`AlertWrites.apply_detections`)."""
        return await self.writes.apply_detections(records, now)

    async def sweep(self, now: datetime) -> SweepResult:
        """Auto-resolve and escalate what is due (:meth:`AlertWrites.sweep`)."""
        return await self.writes.sweep(now)

    async def outbox_pending_count(self) -> int:
        """Outbox rows waiting or being sent (:meth:`Outbox.pending_count`)."""
        return await self.outbox.pending_count()
