"""Read queries for the on-call API and console: list alerts, show one with its history, silences.

Each query runs in a transaction of its own and returns the models of :mod:`alerts.models`;
nothing here changes a row.
"""

from __future__ import annotations

from datetime import datetime

from alerts import models
from alerts.exceptions import AlertNotFound
from alerts.models import AlertDetail, AlertFilter, AlertView, SilenceView
from alerts.pg import AlertDb, alert_view, row_model, silence_view

__all__ = ["BIGINT_MAX", "SILENCES_LIST_LIMIT", "AlertReads"]

SILENCES_LIST_LIMIT = 500
BIGINT_MAX = 2**63 - 1  # alert_id is bigint: a larger id cannot exist (and asyncpg refuses it)


class AlertReads:
    """Alerts, their history and silences, as the API and console show them.

    Args:
        db: the open alert database.
    """

    def __init__(self, db: AlertDb) -> None:
        self._db = db

    async def list_alerts(self, flt: AlertFilter) -> list[AlertView]:
        """Alerts matching the filter, newest first."""
        async with self._db.tx("list alerts") as conn:
            rows = await conn.fetch(
                """
                SELECT * FROM alerts
                WHERE ($1::text IS NULL OR state = $1)
                    AND ($2::boolean IS NULL OR (state <> 'resolved') = $2)
                    AND ($3::text IS NULL OR severity = $3)
                    AND ($4::text IS NULL OR network = $4)
                    AND ($5::text IS NULL OR site = $5)
                    AND ($6::text IS NULL OR kind = $6)
                ORDER BY alert_id DESC LIMIT $7
                """,
                flt.state,
                flt.active,
                flt.severity,
                flt.network,
                flt.site,
                flt.kind,
                flt.limit,
            )
        return [alert_view(r) for r in rows]

    async def get_alert(self, alert_id: int) -> AlertDetail:
        """One alert with its detections, history and notifications (with every attempt).

        Raises:
            AlertNotFound: no such alert.
        """
        if not 1 <= alert_id <= BIGINT_MAX:
            raise AlertNotFound(f"no alert {alert_id}")
        async with self._db.tx("show alert") as conn:
            row = await conn.fetchrow("SELECT * FROM alerts WHERE alert_id = $1", alert_id)
            if row is None:
                raise AlertNotFound(f"no alert {alert_id}")
            dets = await conn.fetch(
                "SELECT * FROM alert_detections WHERE alert_id = $1 ORDER BY started_at",
                alert_id,
            )
            events = await conn.fetch(
                "SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY event_id", alert_id
            )
            outbox = await conn.fetch(
                "SELECT * FROM alert_outbox WHERE alert_id = $1 ORDER BY outbox_id", alert_id
            )
            attempts = await conn.fetch(
                """
                SELECT a.* FROM alert_notification_attempts a
                JOIN alert_outbox o USING (outbox_id) WHERE o.alert_id = $1
                ORDER BY a.attempt_id
                """,
                alert_id,
            )
        by_outbox: dict[int, list[models.AttemptView]] = {}
        for a in attempts:
            by_outbox.setdefault(a["outbox_id"], []).append(row_model(models.AttemptView, a))
        return AlertDetail(
            alert=alert_view(row),
            detections=[row_model(models.DetectionView, d) for d in dets],
            events=[row_model(models.AlertEventView, e) for e in events],
            notifications=[
                row_model(models.NotificationView, o, history=by_outbox.get(o["outbox_id"], []))
                for o in outbox
            ],
        )

    async def list_silences(self, now: datetime, *, active_only: bool = True) -> list[SilenceView]:
        """Silences, newest first (at most :data:`SILENCES_LIST_LIMIT`); only those not ended
        yet unless ``active_only`` is False."""
        async with self._db.tx("list silences") as conn:
            rows = await conn.fetch(
                """
                SELECT * FROM alert_silences WHERE NOT $1 OR ends_at > $2
                ORDER BY silence_id DESC LIMIT $3
                """,
                active_only,
                now,
                SILENCES_LIST_LIMIT,
            )
        return [silence_view(r) for r in rows]
