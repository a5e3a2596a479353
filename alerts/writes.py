"""The alert write transactions in PostgreSQL: state changes, their history, silences.

Each public method is one transaction: lock the rows concerned, ask :mod:`alerts.lifecycle`
what changes, write it with an ``alert_events`` history row, and queue the notifications
announcing it (:mod:`alerts.notices` decides who is told what, :func:`alerts.outbox.enqueue`
stores it). Because the change and its outbox rows commit together, a notification exists
exactly when the change it announces does.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from alerts import lifecycle, notices
from alerts.exceptions import AlertNotFound
from alerts.links import KEY_BYTES, LinkRefused, LinkSigner, TokenClaims
from alerts.models import AlertView, SilenceView
from alerts.notices import AlertEvent
from alerts.outbox import enqueue, suppress_pending
from alerts.pg import AlertDb, alert_view, silence_view
from core.settings import AlertsSettings
from wire.events import DetectionRecord, DetectionState

if TYPE_CHECKING:
    from alerts.pg import Conn

__all__ = ["SWEEP_LIMIT", "AlertWrites", "ApplyResult", "SweepResult"]

# Alerts resolved (and, separately, escalated) per sweep transaction; the rest wait a tick.
SWEEP_LIMIT = 200


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one batch of detections did.

    Attributes:
        new_alerts: alerts opened.
        duplicates: detections seen before (or clearing an unknown one), ignored.
        joined: detections added to an active alert of their group.
        cleared: detections that ended.
        queued: notifications due to be sent (the dispatcher can be woken).
        opened_by_severity: ``new_alerts`` per severity.
    """

    new_alerts: int = 0
    duplicates: int = 0
    joined: int = 0
    cleared: int = 0
    queued: int = 0
    opened_by_severity: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one auto-resolve / escalation sweep did.

    Attributes:
        resolved: alerts resolved after their hold time.
        escalated: unacknowledged alerts escalated one level.
        queued: notifications due to be sent.
        resolved_by_severity: ``resolved`` per severity.
        escalated_by_severity: ``escalated`` per severity.
    """

    resolved: int = 0
    escalated: int = 0
    queued: int = 0
    resolved_by_severity: dict[str, int] = field(default_factory=dict)
    escalated_by_severity: dict[str, int] = field(default_factory=dict)


class AlertWrites:
    """Alert changes and their history, each in one transaction with its outbox rows.

    Args:
        db: the open alert database.
        cfg: the ``alerts`` settings (rules, routes, hold and escalation times).
        channels: notifier type per notifier name (every routed target has one).
        links: makes the acknowledgement link of each notification (None: no links, or only
            ``alerts.ack_url_template``'s).
    """

    def __init__(
        self,
        db: AlertDb,
        cfg: AlertsSettings,
        channels: Mapping[str, str],
        links: LinkSigner | None = None,
    ) -> None:
        self._db = db
        self._cfg = cfg
        self._channels = channels
        self._links = links

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
        async with self._db.tx("apply detections") as conn:
            for rec in records:
                # One detection id at a time across service instances: the seen-before check
                # and the insert that follows must not interleave.
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
        opening = lifecycle.open_detection(rec, self._cfg, now)
        d = opening.decision
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
            *_reading(rec),
            opening.next_escalation_at,
            now,
        )
        if row is not None:
            await self._insert_detection(conn, rec, row["alert_id"])
            await _history(conn, row["alert_id"], now, "opened", "detection", _det(rec, d.rule))
            counts["new_alerts"] += 1
            opened[d.severity] = opened.get(d.severity, 0) + 1
            counts["queued"] += await self._announce(conn, row, "opened", "opened", now)
            return
        row = await conn.fetchrow(
            "SELECT * FROM alerts WHERE group_key = $1 AND state <> 'resolved' FOR UPDATE",
            d.group_key,
        )
        assert row is not None  # the conflicting active alert exists and we hold its lock
        alert_id = row["alert_id"]
        await self._insert_detection(conn, rec, alert_id)
        counts["joined"] += 1
        joining = lifecycle.join(alert_view(row), opening)
        if joining.raised:
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
                *_reading(rec),
                joining.next_escalation_at,
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
        await _history(conn, alert_id, now, "detection_joined", "detection", _det(rec, d.rule))
        if joining.raised:
            await _history(
                conn, alert_id, now, "severity_raised", "detection", {"severity": d.severity}
            )
            counts["queued"] += await self._announce(
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
        due = lifecycle.resolve_due_at(self._cfg, now)
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
            await _history(
                conn,
                alert_id,
                now,
                "condition_cleared",
                "detection",
                {"detection_id": rec.detection_id, "resolve_due_at": due.isoformat()},
            )

    # ----------------------------------------------------------------- sweep

    async def sweep(self, now: datetime) -> SweepResult:
        """Auto-resolve alerts whose hold time passed; escalate unacknowledged ones past deadline.

        Rows are locked with SKIP LOCKED, so several service instances can sweep at once.

        Args:
            now: the service clock.

        Returns:
            Counts of what happened.
        """
        resolved = escalated = queued = 0
        resolved_by: dict[str, int] = {}
        escalated_by: dict[str, int] = {}
        async with self._db.tx("sweep") as conn:
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
                await _history(conn, row["alert_id"], now, "resolved", "auto", {})
                queued += await self._announce(conn, row, "resolved", "resolved", now)
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
                step = lifecycle.escalate(
                    row["escalation_level"], self._cfg, now, severity=row["severity"]
                )
                updated = await conn.fetchrow(
                    """
                    UPDATE alerts SET escalation_level = $2, next_escalation_at = $3,
                        updated_at = $4
                    WHERE alert_id = $1 RETURNING *
                    """,
                    row["alert_id"],
                    step.level,
                    step.next_escalation_at,
                    now,
                )
                assert updated is not None
                await _history(
                    conn, row["alert_id"], now, "escalated", "auto", {"level": step.level}
                )
                queued += await self._announce(
                    conn, updated, "escalated", f"escalated-{step.level}", now, level=step.level
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

    # ----------------------------------------------------------------- notifications

    async def _announce(
        self,
        conn: Conn,
        row: asyncpg.Record,
        event: AlertEvent,
        event_key: str,
        now: datetime,
        *,
        level: int = 0,
    ) -> int:
        """Queue the notifications announcing ``event``; returns rows due to be sent."""
        alert = alert_view(row)
        n_det, n_dev = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT device_id) FROM alert_detections WHERE alert_id = $1",
            alert.alert_id,
        ) or (1, 1)
        silence_id = await self._active_silence(conn, row, alert, now)
        targets = notices.notify_targets(alert, event, self._cfg, level=level)
        message = notices.alert_message(
            alert, event, self._cfg, now, level=level, detections=int(n_det), devices=int(n_dev)
        )
        links = self._links

        def ack_link(target: str) -> str | None:
            return links.ack_url(alert.alert_id, target, now) if links else message.ack_url

        entries = notices.outbox_entries(
            message,
            event_key,
            targets,
            self._channels,
            silence_id=silence_id,
            grafana=bool(self._cfg.grafana_url),
            ack_link=ack_link,
        )
        queued = await enqueue(conn, entries, now)
        if silence_id is not None and targets:
            await _history(
                conn,
                alert.alert_id,
                now,
                "notification_suppressed",
                "silence",
                {"silence_id": silence_id, "event": event, "targets": list(targets)},
            )
        return queued

    async def _active_silence(
        self, conn: Conn, row: asyncpg.Record, alert: AlertView, now: datetime
    ) -> int | None:
        """The silence covering the alert now: its own (0 if ended meanwhile), or a window."""
        if lifecycle.alert_silence_active(alert, now):
            sid = await conn.fetchval(
                """
                SELECT silence_id FROM alert_silences WHERE alert_id = $1 AND ends_at > $2
                ORDER BY ends_at DESC LIMIT 1
                """,
                alert.alert_id,
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
            alert.network,
            alert.site,
            alert.device_id,
            row["grp"],
        )
        return int(sid) if sid is not None else None

    # ----------------------------------------------------------------- on-call actions

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
        async with self._db.tx("acknowledge") as conn:
            lifecycle.check_acknowledge(alert_view(await _lock_alert(conn, alert_id)))
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
            await _history(conn, alert_id, now, "acknowledged", actor, _note(note))
        assert row is not None
        return alert_view(row)

    async def acknowledge_by_link(self, claims: TokenClaims, now: datetime) -> AlertView:
        """Acknowledge the alert of a verified ``ack`` link, once: the link's use is recorded
        (its nonce, recipient, time) with the acknowledgement in one transaction, and the
        history names the link's recipient as who acknowledged.

        Raises:
            LinkRefused: the link was used before (``reused``).
            AlertNotFound: no such alert.
            InvalidTransition: the alert is already acknowledged or resolved (the link stays
                unused).
        """
        alert_id = int(claims.subject)
        async with self._db.tx("acknowledge by link") as conn:
            alert = alert_view(await _lock_alert(conn, alert_id))
            if await conn.fetchval("SELECT 1 FROM alert_link_uses WHERE nonce = $1", claims.nonce):
                raise LinkRefused("reused", "this link was used already; each link works once")
            lifecycle.check_acknowledge(alert)
            used = await conn.fetchrow(
                """
                INSERT INTO alert_link_uses (nonce, alert_id, purpose, recipient, used_at)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT (nonce) DO NOTHING RETURNING nonce
                """,
                claims.nonce,
                alert_id,
                claims.purpose,
                claims.recipient,
                now,
            )
            if used is None:
                raise LinkRefused("reused", "this link was used already; each link works once")
            row = await conn.fetchrow(
                """
                UPDATE alerts SET state = 'acknowledged', acknowledged_at = $2,
                    acknowledged_by = $3, next_escalation_at = NULL, updated_at = $2
                WHERE alert_id = $1 RETURNING *
                """,
                alert_id,
                now,
                claims.recipient,
            )
            detail = {
                "via": "link",
                "recipient": claims.recipient,
                "link_expires_at": claims.expires_at.isoformat(),
            }
            await _history(conn, alert_id, now, "acknowledged", claims.recipient, detail)
        assert row is not None
        return alert_view(row)

    async def link_used(self, nonce: str) -> bool:
        """Whether the link with this nonce was used already."""
        async with self._db.tx("check link") as conn:
            return bool(
                await conn.fetchval("SELECT 1 FROM alert_link_uses WHERE nonce = $1", nonce)
            )

    async def link_key(self, configured: bytes | None) -> bytes:
        """The links' and sessions' HMAC key: ``configured`` when given, else the database's
        own (made at random by the first process to ask, then shared by every process)."""
        if configured is not None:
            return configured
        async with self._db.tx("link key") as conn:
            await conn.execute(
                "INSERT INTO console_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                secrets.token_bytes(KEY_BYTES),
            )
            key: bytes = await conn.fetchval("SELECT key FROM console_keys WHERE id = 1")
        return key

    async def resolve(
        self, alert_id: int, actor: str, note: str | None, now: datetime
    ) -> AlertView:
        """Resolve an alert by hand; resolution notifications are queued.

        Args and returns as :meth:`acknowledge` (``actor``: who resolves it).

        Raises:
            AlertNotFound: no such alert.
            InvalidTransition: the alert is already resolved.
        """
        async with self._db.tx("resolve") as conn:
            lifecycle.check_resolve(alert_view(await _lock_alert(conn, alert_id)))
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
            await _history(conn, alert_id, now, "resolved", actor, _note(note))
            await self._announce(conn, row, "resolved", "resolved", now)
        return alert_view(row)

    async def silence_alert(
        self,
        alert_id: int,
        actor: str,
        duration_s: float | None,
        reason: str,
        now: datetime,
    ) -> SilenceView:
        """Silence an alert and its site's group for ``duration_s``; queued sends are dropped.

        The alert and every later change keep being recorded; only notifications stop. An
        alert of a per-device rule silences only its device.

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
        until = lifecycle.silence_until(self._cfg, now, duration_s)
        async with self._db.tx("silence") as conn:
            row = await _lock_alert(conn, alert_id)
            alert = alert_view(row)
            lifecycle.check_silence(alert)
            srow = await conn.fetchrow(
                """
                INSERT INTO alert_silences (kind, network, site, device_id, grp, alert_id,
                    starts_at, ends_at, reason, created_by, created_at)
                VALUES ('silence', $1, $2, $3, $4, $5, $6, $7, $8, $9, $6) RETURNING *
                """,
                alert.network,
                alert.site,
                alert.device_id if lifecycle.silences_device_only(alert) else None,
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
            dropped = await suppress_pending(conn, alert_id, srow["silence_id"])
            await _history(
                conn,
                alert_id,
                now,
                "silenced",
                actor,
                {
                    "silence_id": srow["silence_id"],
                    "until": until.isoformat(),
                    "reason": reason,
                    "dropped_pending": dropped,
                },
            )
        return silence_view(srow)

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
        async with self._db.tx("create silence") as conn:
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
        return silence_view(row)

    async def end_silence(self, silence_id: int, now: datetime) -> SilenceView:
        """End a silence now (it stays in the record).

        Raises:
            AlertNotFound: no such silence.
        """
        async with self._db.tx("end silence") as conn:
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
        return silence_view(row)


async def _lock_alert(conn: Conn, alert_id: int) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM alerts WHERE alert_id = $1 FOR UPDATE", alert_id
    )
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    return row


async def _history(
    conn: Conn, alert_id: int, at: datetime, event: str, actor: str, detail: dict[str, Any]
) -> None:
    """Append one entry to the alert's history (``alert_events``)."""
    await conn.execute(
        "INSERT INTO alert_events (alert_id, at, event, actor, detail) VALUES ($1,$2,$3,$4,$5)",
        alert_id,
        at,
        event,
        actor,
        detail,
    )


def _reading(rec: DetectionRecord) -> tuple[Any, ...]:
    """The alert columns a detection sets, in this order: device_id, metric, detector, value,
    threshold, location, started_at (also the first last_seen_at)."""
    return (
        rec.device_id,
        rec.metric,
        rec.detector,
        rec.value,
        rec.threshold,
        rec.location,
        rec.started_at,
    )


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
