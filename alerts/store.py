"""PostgreSQL adapter for alerts: lifecycle transitions, history, silences and the outbox.

Every alert change and the outbox rows announcing it are written in one transaction, so a
notification exists exactly when the change it announces does. The only module of the package
that imports asyncpg; its errors are mapped in :func:`db_errors`. The tables come from
``alerts/migrations/2NN_*.sql``, applied by ``ghgwatch db migrate`` (processors.storage.migrate).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import structlog

from adapters import pg_errors
from alerts.exceptions import AlertNotFound, InvalidTransition
from alerts.messages import AlertMessage, grafana_link
from alerts.models import (
    AlertDetail,
    AlertEventView,
    AlertFilter,
    AlertView,
    AttemptView,
    DetectionView,
    NotificationView,
    SilenceView,
)
from alerts.rules import SEVERITY_RANK, classify, escalation_targets, route_targets
from core.errors import ConfigurationError, FatalError
from core.settings import AlertsSettings, DbSettings
from wire.events import DetectionRecord, DetectionState

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[Any]

__all__ = [
    "AlertStore",
    "ApplyResult",
    "OutboxItem",
    "SweepResult",
    "db_errors",
]

log = structlog.get_logger(__name__)

SWEEP_LIMIT = 200
GRAFANA_TARGET = "grafana"


def db_errors(action: str) -> contextlib.AbstractContextManager[None]:
    """:func:`processors.storage.pg_errors` as alerts uses it: an unknown database is fatal.

    Args:
        action: what was being done, for the message.

    Returns:
        The context manager translating asyncpg and socket errors raised inside it.

    Raises:
        FatalError: refused credentials, missing database or schema (stop).
        StorageBackpressure: the database is unreachable, slow or the transaction conflicted.
    """
    return pg_errors(f"alerts {action}", missing_database_fatal=True)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one batch of detections did (``opened_by_severity``: new alerts per severity)."""

    new_alerts: int = 0
    duplicates: int = 0
    joined: int = 0
    cleared: int = 0
    queued: int = 0
    opened_by_severity: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one auto-resolve / escalation sweep did (the ``*_by_severity`` split the counts)."""

    resolved: int = 0
    escalated: int = 0
    queued: int = 0
    resolved_by_severity: dict[str, int] = field(default_factory=dict)
    escalated_by_severity: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A claimed outbox row: one notification to one target, ready to send."""

    outbox_id: int
    idempotency_key: str
    alert_id: int
    event: str
    target: str
    channel: str
    message: AlertMessage
    attempt: int
    annotation_id: int | None


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _ts(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


class AlertStore:
    """Alerts, their history and the notification outbox in PostgreSQL.

    Args:
        url: database URL.
        cfg: the ``alerts`` settings section (rules, routes, hold and escalation times).
        db: the ``db`` settings section (pool size, command timeout).
    """

    def __init__(self, url: str, cfg: AlertsSettings, db: DbSettings | None = None) -> None:
        self._url = url
        self._cfg = cfg
        self._db = db or DbSettings()
        self._pool: asyncpg.Pool[Any] | None = None
        self._channels = {n.name: n.type for n in cfg.notifiers}
        for route in cfg.routes:
            for name in (*route.targets, *route.escalation):
                if name not in self._channels:
                    raise ConfigurationError(
                        f"alerts route {route.name!r} names unknown notifier {name!r}"
                    )

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
        with db_errors("connect"):
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self._db.pool_min,
                max_size=max(self._db.pool_max, self._db.pool_min),
                command_timeout=self._db.command_timeout_s,
                timeout=self._db.command_timeout_s,
                init=_init_connection,
            )

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def _tx(self, action: str) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise FatalError("alert store is not open")
        with db_errors(action):
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn

    # ----------------------------------------------------------------- detections

    async def apply_detections(
        self, records: Sequence[DetectionRecord], now: datetime
    ) -> ApplyResult:
        """Turn a batch of detections into alert changes and outbox rows, in one transaction.

        A detection id seen before is ignored (redelivery, replay, repeats), so applying the
        same batch twice changes nothing the second time.

        Args:
            records: decoded detections, in partition order.
            now: the service clock (hold and escalation deadlines count from it).

        Returns:
            Counts of what happened.

        Raises:
            StorageBackpressure: the database did not take the batch; nothing was written.
        """
        counts = {"new_alerts": 0, "duplicates": 0, "joined": 0, "cleared": 0, "queued": 0}
        opened: dict[str, int] = {}
        async with self._tx("apply detections") as conn:
            for rec in records:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", rec.detection_id
                )
                if rec.state is DetectionState.OPEN:
                    await self._apply_open(conn, rec, now, counts, opened)
                else:
                    await self._apply_cleared(conn, rec, now, counts)
        return ApplyResult(**counts, opened_by_severity=opened)

    async def _apply_open(
        self,
        conn: Conn,
        rec: DetectionRecord,
        now: datetime,
        counts: dict[str, int],
        opened: dict[str, int],
    ) -> None:
        if await conn.fetchval(
            "SELECT 1 FROM alert_detections WHERE detection_id = $1", rec.detection_id
        ):
            counts["duplicates"] += 1
            return
        d = classify(rec, self._cfg.rules)
        critical = d.severity == "critical" and self._cfg.max_escalations > 0
        next_esc = _ts(now, self._cfg.escalate_after_s) if critical else None
        row = await conn.fetchrow(
            """
            INSERT INTO alerts (group_key, rule, grp, network, site, kind, severity, state,
                device_id, metric, detector, value, threshold, location, started_at,
                last_seen_at, next_escalation_at, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10, $11, $12, $13, $14,
                $14, $15, $16, $16)
            ON CONFLICT (group_key) WHERE state <> 'resolved' DO NOTHING
            RETURNING *
            """,
            d.group_key,
            d.rule,
            d.group,
            rec.network,
            rec.site,
            rec.kind,
            d.severity,
            rec.device_id,
            rec.metric,
            rec.detector,
            rec.value,
            rec.threshold,
            rec.location,
            rec.started_at,
            next_esc,
            now,
        )
        if row is not None:
            await self._insert_detection(conn, rec, row["alert_id"])
            await self._event(conn, row["alert_id"], now, "opened", "detection", _det(rec, d.rule))
            counts["new_alerts"] += 1
            opened[d.severity] = opened.get(d.severity, 0) + 1
            counts["queued"] += await self._enqueue(conn, row, "opened", "opened", now)
            return
        row = await conn.fetchrow(
            "SELECT * FROM alerts WHERE group_key = $1 AND state <> 'resolved' FOR UPDATE",
            d.group_key,
        )
        assert row is not None  # the conflicting active alert exists and we hold its lock
        alert_id = row["alert_id"]
        await self._insert_detection(conn, rec, alert_id)
        counts["joined"] += 1
        raised = SEVERITY_RANK[d.severity] > SEVERITY_RANK[row["severity"]]
        if raised:
            esc = row["next_escalation_at"]
            if critical and row["state"] == "open" and esc is None:
                esc = next_esc
            row = await conn.fetchrow(
                """
                UPDATE alerts SET severity = $2, rule = $3, device_id = $4, metric = $5,
                    detector = $6, value = $7, threshold = $8, location = $9,
                    last_seen_at = greatest(last_seen_at, $10), condition_active = true,
                    resolve_due_at = NULL, next_escalation_at = $11, updated_at = $12
                WHERE alert_id = $1 RETURNING *
                """,
                alert_id,
                d.severity,
                d.rule,
                rec.device_id,
                rec.metric,
                rec.detector,
                rec.value,
                rec.threshold,
                rec.location,
                rec.started_at,
                esc,
                now,
            )
            assert row is not None
        else:
            await conn.execute(
                """
                UPDATE alerts SET last_seen_at = greatest(last_seen_at, $2),
                    condition_active = true, resolve_due_at = NULL, updated_at = $3
                WHERE alert_id = $1
                """,
                alert_id,
                rec.started_at,
                now,
            )
        await self._event(conn, alert_id, now, "detection_joined", "detection", _det(rec, d.rule))
        if raised:
            await self._event(
                conn, alert_id, now, "severity_raised", "detection", {"severity": d.severity}
            )
            counts["queued"] += await self._enqueue(
                conn, row, "severity_raised", f"severity-{d.severity}", now
            )

    async def _insert_detection(self, conn: Conn, rec: DetectionRecord, alert_id: int) -> None:
        await conn.execute(
            """
            INSERT INTO alert_detections (detection_id, alert_id, device_id, metric, detector,
                severity, state, started_at, ended_at, value, threshold, record)
            VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, $9, $10, $11)
            """,
            rec.detection_id,
            alert_id,
            rec.device_id,
            rec.metric,
            rec.detector,
            str(rec.severity),
            rec.started_at,
            rec.ended_at,
            rec.value,
            rec.threshold,
            rec.model_dump(mode="json"),
        )

    async def _apply_cleared(
        self,
        conn: Conn,
        rec: DetectionRecord,
        now: datetime,
        counts: dict[str, int],
    ) -> None:
        alert_id = await conn.fetchval(
            """
            UPDATE alert_detections SET state = 'cleared', ended_at = $2
            WHERE detection_id = $1 AND state = 'open' RETURNING alert_id
            """,
            rec.detection_id,
            rec.ended_at or now,
        )
        if alert_id is None:  # unknown detection or already cleared: a repeat, nothing to do
            counts["duplicates"] += 1
            return
        counts["cleared"] += 1
        still_open = await conn.fetchval(
            "SELECT count(*) FROM alert_detections WHERE alert_id = $1 AND state = 'open'",
            alert_id,
        )
        if still_open:
            return
        due = _ts(now, self._cfg.resolve_hold_s)
        changed = await conn.fetchval(
            """
            UPDATE alerts SET condition_active = false, resolve_due_at = $2, updated_at = $3
            WHERE alert_id = $1 AND state <> 'resolved' RETURNING alert_id
            """,
            alert_id,
            due,
            now,
        )
        if changed is not None:
            await self._event(
                conn,
                alert_id,
                now,
                "condition_cleared",
                "detection",
                {"detection_id": rec.detection_id, "resolve_due_at": due.isoformat()},
            )

    # ----------------------------------------------------------------- sweep

    async def sweep(self, now: datetime) -> SweepResult:
        """Auto-resolve alerts whose hold time passed; escalate unacknowledged critical ones.

        Rows are locked with SKIP LOCKED, so several service instances can sweep at once.

        Args:
            now: the service clock.

        Returns:
            Counts of what happened.
        """
        resolved = escalated = queued = 0
        resolved_by: dict[str, int] = {}
        escalated_by: dict[str, int] = {}
        async with self._tx("sweep") as conn:
            rows = await conn.fetch(
                """
                UPDATE alerts SET state = 'resolved', resolved_at = $1, resolved_by = 'auto',
                    next_escalation_at = NULL, updated_at = $1
                WHERE alert_id IN (
                    SELECT alert_id FROM alerts
                    WHERE state <> 'resolved' AND NOT condition_active AND resolve_due_at <= $1
                    ORDER BY alert_id LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING *
                """,
                now,
                SWEEP_LIMIT,
            )
            for row in rows:
                await self._event(conn, row["alert_id"], now, "resolved", "auto", {})
                queued += await self._enqueue(conn, row, "resolved", "resolved", now)
                resolved += 1
                resolved_by[row["severity"]] = resolved_by.get(row["severity"], 0) + 1
            rows = await conn.fetch(
                """
                SELECT * FROM alerts
                WHERE state = 'open' AND next_escalation_at IS NOT NULL
                    AND next_escalation_at <= $1
                ORDER BY alert_id LIMIT $2 FOR UPDATE SKIP LOCKED
                """,
                now,
                SWEEP_LIMIT,
            )
            for row in rows:
                level = row["escalation_level"] + 1
                nxt = (
                    _ts(now, self._cfg.escalate_after_s)
                    if level < self._cfg.max_escalations
                    else None
                )
                updated = await conn.fetchrow(
                    """
                    UPDATE alerts SET escalation_level = $2, next_escalation_at = $3,
                        updated_at = $4
                    WHERE alert_id = $1 RETURNING *
                    """,
                    row["alert_id"],
                    level,
                    nxt,
                    now,
                )
                assert updated is not None
                await self._event(conn, row["alert_id"], now, "escalated", "auto", {"level": level})
                queued += await self._enqueue(
                    conn, updated, "escalated", f"escalated-{level}", now, level=level
                )
                escalated += 1
                escalated_by[row["severity"]] = escalated_by.get(row["severity"], 0) + 1
        return SweepResult(
            resolved=resolved,
            escalated=escalated,
            queued=queued,
            resolved_by_severity=resolved_by,
            escalated_by_severity=escalated_by,
        )

    # ----------------------------------------------------------------- outbox (write)

    async def _enqueue(
        self,
        conn: Conn,
        row: asyncpg.Record,
        event: str,
        event_key: str,
        now: datetime,
        *,
        level: int = 0,
    ) -> int:
        """Queue the notifications announcing ``event``; returns rows due to be sent."""
        cfg = self._cfg
        where = {
            "network": row["network"],
            "site": row["site"],
            "kind": row["kind"],
            "severity": row["severity"],
        }
        if event == "escalated":
            targets = escalation_targets(cfg.routes, level=level, **where)
        elif event == "resolved":
            targets = escalation_targets(cfg.routes, level=row["escalation_level"], **where)
        else:
            targets = route_targets(cfg.routes, **where)
        alert_id = row["alert_id"]
        n_det, n_dev = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT device_id) FROM alert_detections WHERE alert_id = $1",
            alert_id,
        ) or (1, 1)
        msg = AlertMessage(
            alert_id=alert_id,
            event=event,
            level=level,
            severity=row["severity"],
            rule=row["rule"],
            network=row["network"],
            site=row["site"],
            kind=row["kind"],
            device_id=row["device_id"],
            metric=row["metric"],
            detector=row["detector"],
            value=row["value"],
            threshold=row["threshold"],
            location=row["location"],
            started_at=row["started_at"],
            at=now,
            resolved_at=row["resolved_at"],
            resolved_by=row["resolved_by"],
            detections=max(int(n_det), 1),
            devices=max(int(n_dev), 1),
            link=grafana_link(
                cfg.grafana_url,
                cfg.grafana_dashboards,
                kind=row["kind"],
                network=row["network"],
                site=row["site"],
                device_id=row["device_id"],
                started_at=row["started_at"],
                ended_at=row["resolved_at"],
            ),
        )
        silence_id = await self._active_silence(conn, row, now)
        queued = 0
        rows: list[tuple[str, str, str]] = []
        for target in targets:
            status = "pending" if silence_id is None else "suppressed"
            rows.append((target, self._channels[target], status))
        if cfg.grafana_url and event in ("opened", "resolved"):
            rows.append((GRAFANA_TARGET, "grafana", "pending"))  # the record, never silenced
        for target, channel, status in rows:
            key = f"alert-{alert_id}/{event_key}/{target}"
            payload = msg.model_copy(update={"idempotency_key": key}).model_dump(mode="json")
            inserted = await conn.fetchval(
                """
                INSERT INTO alert_outbox (idempotency_key, alert_id, event, target, channel,
                    payload, status, next_attempt_at, created_at, silence_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
                ON CONFLICT (idempotency_key) DO NOTHING RETURNING outbox_id
                """,
                key,
                alert_id,
                event,
                target,
                channel,
                payload,
                status,
                now,
                silence_id if status == "suppressed" else None,
            )
            if inserted is not None and status == "pending":
                queued += 1
        if silence_id is not None and targets:
            await self._event(
                conn,
                alert_id,
                now,
                "notification_suppressed",
                "silence",
                {"silence_id": silence_id, "event": event, "targets": list(targets)},
            )
        return queued

    async def _active_silence(self, conn: Conn, row: asyncpg.Record, now: datetime) -> int | None:
        if row["silenced_until"] is not None and row["silenced_until"] > now:
            sid = await conn.fetchval(
                """
                SELECT silence_id FROM alert_silences WHERE alert_id = $1 AND ends_at > $2
                ORDER BY ends_at DESC LIMIT 1
                """,
                row["alert_id"],
                now,
            )
            return int(sid) if sid is not None else 0
        sid = await conn.fetchval(
            """
            SELECT silence_id FROM alert_silences
            WHERE starts_at <= $1 AND ends_at > $1
                AND (network IS NULL OR network = $2) AND (site IS NULL OR site = $3)
                AND (device_id IS NULL OR device_id = $4) AND (grp IS NULL OR grp = $5)
            ORDER BY silence_id LIMIT 1
            """,
            now,
            row["network"],
            row["site"],
            row["device_id"],
            row["grp"],
        )
        return int(sid) if sid is not None else None

    async def _event(
        self,
        conn: Conn,
        alert_id: int,
        at: datetime,
        event: str,
        actor: str,
        detail: dict[str, Any],
    ) -> None:
        await conn.execute(
            "INSERT INTO alert_events (alert_id, at, event, actor, detail) VALUES ($1,$2,$3,$4,$5)",
            alert_id,
            at,
            event,
            actor,
            detail,
        )

    # ----------------------------------------------------------------- on-call actions

    async def _lock_alert(self, conn: Conn, alert_id: int) -> asyncpg.Record:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id
        )
        if row is None:
            raise AlertNotFound(f"no alert {alert_id}")
        return row

    async def acknowledge(
        self, alert_id: int, actor: str, note: str | None, now: datetime
    ) -> AlertView:
        """Acknowledge an open alert; its escalation stops.

        Args:
            alert_id: the alert.
            actor: who acknowledges (recorded in the history).
            note: optional free text.
            now: the clock.

        Returns:
            The alert after the change.

        Raises:
            AlertNotFound: no such alert.
            InvalidTransition: the alert is already acknowledged or resolved.
        """
        async with self._tx("acknowledge") as conn:
            row: asyncpg.Record | None = await self._lock_alert(conn, alert_id)
            assert row is not None
            if row["state"] != "open":
                by = (
                    row["acknowledged_by"] if row["state"] == "acknowledged" else row["resolved_by"]
                )
                raise InvalidTransition(f"alert {alert_id} is already {row['state']} (by {by})")
            row = await conn.fetchrow(
                """
                UPDATE alerts SET state = 'acknowledged', acknowledged_at = $2,
                    acknowledged_by = $3, next_escalation_at = NULL, updated_at = $2
                WHERE alert_id = $1 RETURNING *
                """,
                alert_id,
                now,
                actor,
            )
            await self._event(conn, alert_id, now, "acknowledged", actor, _note(note))
        assert row is not None
        return _alert_view(row)

    async def resolve(
        self, alert_id: int, actor: str, note: str | None, now: datetime
    ) -> AlertView:
        """Resolve an alert by hand; resolution notifications are queued.

        Args:
            alert_id: the alert.
            actor: who resolves it.
            note: optional free text.
            now: the clock.

        Returns:
            The alert after the change.

        Raises:
            AlertNotFound: no such alert.
            InvalidTransition: the alert is already resolved.
        """
        async with self._tx("resolve") as conn:
            row: asyncpg.Record | None = await self._lock_alert(conn, alert_id)
            assert row is not None
            if row["state"] == "resolved":
                raise InvalidTransition(
                    f"alert {alert_id} is already resolved (by {row['resolved_by']})"
                )
            row = await conn.fetchrow(
                """
                UPDATE alerts SET state = 'resolved', resolved_at = $2, resolved_by = $3,
                    next_escalation_at = NULL, updated_at = $2
                WHERE alert_id = $1 RETURNING *
                """,
                alert_id,
                now,
                actor,
            )
            assert row is not None
            await self._event(conn, alert_id, now, "resolved", actor, _note(note))
            await self._enqueue(conn, row, "resolved", "resolved", now)
        return _alert_view(row)

    async def silence_alert(
        self,
        alert_id: int,
        actor: str,
        duration_s: float | None,
        reason: str,
        now: datetime,
    ) -> SilenceView:
        """Silence an alert and its site's group for ``duration_s``; queued sends are dropped.

        The alert and every later change keep being recorded; only notifications stop.

        Args:
            alert_id: the alert.
            actor: who silences it.
            duration_s: how long; None uses ``alerts.silence_default_s``.
            reason: why (kept in the history).
            now: the clock.

        Returns:
            The silence created.

        Raises:
            AlertNotFound: no such alert.
            InvalidTransition: the alert is resolved.
        """
        until = _ts(now, duration_s or self._cfg.silence_default_s)
        async with self._tx("silence") as conn:
            row = await self._lock_alert(conn, alert_id)
            if row["state"] == "resolved":
                raise InvalidTransition(f"alert {alert_id} is resolved; nothing to silence")
            by_device = row["group_key"].count("/") >= 3
            srow = await conn.fetchrow(
                """
                INSERT INTO alert_silences (kind, network, site, device_id, grp, alert_id,
                    starts_at, ends_at, reason, created_by, created_at)
                VALUES ('silence', $1, $2, $3, $4, $5, $6, $7, $8, $9, $6) RETURNING *
                """,
                row["network"],
                row["site"],
                row["device_id"] if by_device else None,
                row["grp"],
                alert_id,
                now,
                until,
                reason,
                actor,
            )
            assert srow is not None
            await conn.execute(
                "UPDATE alerts SET silenced_until = $2, updated_at = $3 WHERE alert_id = $1",
                alert_id,
                until,
                now,
            )
            dropped = await conn.fetchval(
                """
                WITH s AS (
                    UPDATE alert_outbox SET status = 'suppressed', silence_id = $2
                    WHERE alert_id = $1 AND status = 'pending' AND channel <> 'grafana'
                    RETURNING 1)
                SELECT count(*) FROM s
                """,
                alert_id,
                srow["silence_id"],
            )
            await self._event(
                conn,
                alert_id,
                now,
                "silenced",
                actor,
                {
                    "silence_id": srow["silence_id"],
                    "until": until.isoformat(),
                    "reason": reason,
                    "dropped_pending": int(dropped or 0),
                },
            )
        return _silence_view(srow)

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
        """Create a silence or maintenance window (e.g. sensor calibration).

        Args:
            kind: ``silence`` or ``maintenance``.
            network: match this network (None: any).
            site: match this site (None: any).
            device_id: match this alert device (None: any).
            group: match this rule group, e.g. ``gas`` (None: any).
            starts_at: start (aware).
            ends_at: end (aware, after start).
            reason: why.
            actor: who.

        Returns:
            The stored silence.
        """
        async with self._tx("create silence") as conn:
            row = await conn.fetchrow(
                """
                INSERT INTO alert_silences (kind, network, site, device_id, grp, starts_at,
                    ends_at, reason, created_by, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) RETURNING *
                """,
                kind,
                network,
                site,
                device_id,
                group,
                starts_at,
                ends_at,
                reason,
                actor,
            )
        assert row is not None
        return _silence_view(row)

    async def end_silence(self, silence_id: int, now: datetime) -> SilenceView:
        """End a silence now (it stays in the record).

        Raises:
            AlertNotFound: no such silence.
        """
        async with self._tx("end silence") as conn:
            row = await conn.fetchrow(
                """
                UPDATE alert_silences SET ends_at = greatest(starts_at + interval '1 ms', $2)
                WHERE silence_id = $1 RETURNING *
                """,
                silence_id,
                now,
            )
            if row is None:
                raise AlertNotFound(f"no silence {silence_id}")
            if row["alert_id"] is not None:
                await conn.execute(
                    "UPDATE alerts SET silenced_until = NULL WHERE alert_id = $1",
                    row["alert_id"],
                )
        return _silence_view(row)

    async def list_silences(self, now: datetime, *, active_only: bool = True) -> list[SilenceView]:
        """Silences, newest first; only those not ended yet unless ``active_only`` is False."""
        async with self._tx("list silences") as conn:
            rows = await conn.fetch(
                """
                SELECT * FROM alert_silences WHERE NOT $1 OR ends_at > $2
                ORDER BY silence_id DESC LIMIT 500
                """,
                active_only,
                now,
            )
        return [_silence_view(r) for r in rows]

    # ----------------------------------------------------------------- reads

    async def list_alerts(self, flt: AlertFilter) -> list[AlertView]:
        """Alerts matching the filter, newest first."""
        async with self._tx("list alerts") as conn:
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
        return [_alert_view(r) for r in rows]

    async def get_alert(self, alert_id: int) -> AlertDetail:
        """One alert with its detections, history and notifications (with every attempt).

        Raises:
            AlertNotFound: no such alert.
        """
        async with self._tx("show alert") as conn:
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
        by_outbox: dict[int, list[AttemptView]] = {}
        for a in attempts:
            by_outbox.setdefault(a["outbox_id"], []).append(
                AttemptView(
                    attempt=a["attempt"],
                    started_at=a["started_at"],
                    finished_at=a["finished_at"],
                    ok=a["ok"],
                    error=a["error"],
                    response=a["response"],
                )
            )
        return AlertDetail(
            alert=_alert_view(row),
            detections=[
                DetectionView(
                    detection_id=d["detection_id"],
                    device_id=d["device_id"],
                    metric=d["metric"],
                    detector=d["detector"],
                    severity=d["severity"],
                    state=d["state"],
                    started_at=d["started_at"],
                    ended_at=d["ended_at"],
                    value=d["value"],
                    threshold=d["threshold"],
                )
                for d in dets
            ],
            events=[
                AlertEventView(
                    event_id=e["event_id"],
                    at=e["at"],
                    event=e["event"],
                    actor=e["actor"],
                    detail=e["detail"],
                )
                for e in events
            ],
            notifications=[
                NotificationView(
                    outbox_id=o["outbox_id"],
                    idempotency_key=o["idempotency_key"],
                    event=o["event"],
                    target=o["target"],
                    channel=o["channel"],
                    status=o["status"],
                    attempts=o["attempts"],
                    created_at=o["created_at"],
                    sent_at=o["sent_at"],
                    last_error=o["last_error"],
                    history=by_outbox.get(o["outbox_id"], []),
                )
                for o in outbox
            ],
        )

    # ----------------------------------------------------------------- outbox (dispatch)

    async def claim_outbox(self, limit: int, now: datetime) -> list[OutboxItem]:
        """Claim due outbox rows for sending (mark-before-send).

        A row is due when it is pending and its retry time has come, or when it was claimed
        by a sender whose lease ran out (that sender crashed mid-send). Claiming sets
        ``status='sending'``, bumps ``attempts`` and sets a lease, in its own committed
        transaction, before anything is sent.

        Args:
            limit: at most this many rows.
            now: the clock.

        Returns:
            The claimed rows, oldest first.
        """
        async with self._tx("claim outbox") as conn:
            rows = await conn.fetch(
                """
                UPDATE alert_outbox o SET status = 'sending', attempts = o.attempts + 1,
                    lease_until = $2
                WHERE outbox_id IN (
                    SELECT outbox_id FROM alert_outbox
                    WHERE (status = 'pending' AND next_attempt_at <= $1)
                       OR (status = 'sending' AND lease_until <= $1)
                    ORDER BY outbox_id LIMIT $3 FOR UPDATE SKIP LOCKED)
                RETURNING o.outbox_id, o.idempotency_key, o.alert_id, o.event, o.target,
                    o.channel, o.payload, o.attempts,
                    (SELECT grafana_annotation_id FROM alerts a WHERE a.alert_id = o.alert_id)
                        AS annotation_id
                """,
                now,
                _ts(now, self._cfg.lease_s),
                limit,
            )
        return [
            OutboxItem(
                outbox_id=r["outbox_id"],
                idempotency_key=r["idempotency_key"],
                alert_id=r["alert_id"],
                event=r["event"],
                target=r["target"],
                channel=r["channel"],
                message=AlertMessage.model_validate(r["payload"]),
                attempt=r["attempts"],
                annotation_id=r["annotation_id"],
            )
            for r in sorted(rows, key=lambda r: int(r["outbox_id"]))
        ]

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
        """Record an attempt and move the row to sent, pending (retry at ``retry_at``) or failed.

        The update only applies while the row is still this claim (status sending with the
        same attempt number), so a sender whose lease expired cannot overwrite a newer claim.

        Returns:
            The row's new status (or ``stale`` when the claim was lost).
        """
        if ok:
            status = "sent"
        elif retry_at is not None:
            status = "pending"
        else:
            status = "failed"
        async with self._tx("finish outbox") as conn:
            await conn.execute(
                """
                INSERT INTO alert_notification_attempts (outbox_id, attempt, started_at,
                    finished_at, ok, error, response)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                """,
                item.outbox_id,
                item.attempt,
                started_at,
                finished_at,
                ok,
                error,
                response,
            )
            done = await conn.fetchval(
                """
                UPDATE alert_outbox SET status = $3, lease_until = NULL, last_error = $4,
                    sent_at = CASE WHEN $3 = 'sent' THEN $5 ELSE sent_at END,
                    next_attempt_at = coalesce($6, next_attempt_at)
                WHERE outbox_id = $1 AND status = 'sending' AND attempts = $2
                RETURNING outbox_id
                """,
                item.outbox_id,
                item.attempt,
                status,
                error,
                finished_at,
                retry_at,
            )
            if annotation_id is not None:
                await conn.execute(
                    """
                    UPDATE alerts SET grafana_annotation_id = $2
                    WHERE alert_id = $1 AND grafana_annotation_id IS NULL
                    """,
                    item.alert_id,
                    annotation_id,
                )
        return status if done is not None else "stale"

    async def outbox_status_counts(self) -> dict[str, int]:
        """Outbox rows per status (health and tests)."""
        async with self._tx("outbox counts") as conn:
            rows = await conn.fetch("SELECT status, count(*) AS n FROM alert_outbox GROUP BY 1")
        return {r["status"]: int(r["n"]) for r in rows}

    async def outbox_pending_count(self) -> int:
        """Outbox rows waiting to be sent or being sent (counted on the due-rows index)."""
        async with self._tx("outbox pending") as conn:
            n = await conn.fetchval(
                "SELECT count(*) FROM alert_outbox WHERE status IN ('pending', 'sending')"
            )
        return int(n)


def _det(rec: DetectionRecord, rule: str) -> dict[str, Any]:
    return {
        "detection_id": rec.detection_id,
        "device_id": rec.device_id,
        "detector": rec.detector,
        "severity": str(rec.severity),
        "value": rec.value,
        "threshold": rec.threshold,
        "rule": rule,
    }


def _note(note: str | None) -> dict[str, Any]:
    return {"note": note} if note else {}


def _alert_view(row: asyncpg.Record) -> AlertView:
    fields = AlertView.model_fields
    return AlertView(**{k: row[k] for k in fields})


def _silence_view(row: asyncpg.Record) -> SilenceView:
    return SilenceView(
        silence_id=row["silence_id"],
        kind=row["kind"],
        network=row["network"],
        site=row["site"],
        device_id=row["device_id"],
        group=row["grp"],
        alert_id=row["alert_id"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        reason=row["reason"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )
