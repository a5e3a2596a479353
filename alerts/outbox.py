"""The notification outbox in PostgreSQL: store, lease, mark sent / pending / failed.

The outbox only stores what it is given: who is told and what (routing and the message) is
decided before, in :mod:`alerts.notices`. Rows are inserted inside the transaction of the
alert change they announce (:func:`enqueue` takes that transaction's connection), so a
notification exists exactly when its change does. The dispatcher then claims due rows with a
short lease (:meth:`Outbox.claim`), records durably that an attempt starts just before it sends
(:meth:`Outbox.start`), renews the lease while the send runs (:meth:`Outbox.renew`) and records
the attempt's result (:meth:`Outbox.finish`). A row whose lease ran out after its attempt
started is an attempt whose outcome nobody knows (:meth:`Outbox.settle_interrupted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alerts.messages import AlertMessage
from alerts.notices import OutboxEntry
from alerts.pg import AlertDb

if TYPE_CHECKING:
    from alerts.pg import Conn

__all__ = ["Outbox", "OutboxItem", "Unsettled", "enqueue", "suppress_pending"]

# What an attempt whose outcome is unknown is recorded as (attempt history and alert event).
UNKNOWN_ERROR = "outcome unknown: the sender stopped after the send began and before its result"


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


@dataclass(frozen=True, slots=True)
class Unsettled:
    """An attempt that started sending and never finished, set to ``unknown`` (not re-sent).

    Attributes:
        outbox_id: the row.
        alert_id: its alert.
        target: the notifier name.
        channel: the notifier type.
        attempt: the attempt whose outcome is unknown.
    """

    outbox_id: int
    alert_id: int
    target: str
    channel: str
    attempt: int


async def enqueue(conn: Conn, entries: Sequence[OutboxEntry], now: datetime) -> int:
    """Store outbox rows inside the caller's transaction; a key stored before is skipped.

    Args:
        conn: the connection of the transaction writing the change the rows announce.
        entries: the rows (:func:`alerts.notices.outbox_entries`).
        now: when they were queued (and first due).

    Returns:
        How many new rows are due to be sent (suppressed ones and repeats not counted).
    """
    queued = 0
    for e in entries:
        inserted = await conn.fetchval(
            """
            INSERT INTO alert_outbox (idempotency_key, alert_id, event, target, channel,
                payload, status, next_attempt_at, created_at, silence_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING outbox_id
            """,
            e.idempotency_key,
            e.alert_id,
            e.event,
            e.target,
            e.channel,
            e.payload,
            e.status,
            now,
            e.silence_id,
        )
        if inserted is not None and e.status == "pending":
            queued += 1
    return queued


async def suppress_pending(conn: Conn, alert_id: int, silence_id: int) -> int:
    """Mark the alert's rows not sent yet as suppressed by a silence (the Grafana record stays).

    Args:
        conn: the connection of the transaction creating the silence.
        alert_id: the silenced alert.
        silence_id: the silence.

    Returns:
        How many rows were dropped.
    """
    dropped = await conn.fetchval(
        """
        WITH s AS (
            UPDATE alert_outbox SET status = 'suppressed', silence_id = $2
            WHERE alert_id = $1 AND status = 'pending' AND channel <> 'grafana'
            RETURNING 1)
        SELECT count(*) FROM s
        """,
        alert_id,
        silence_id,
    )
    return int(dropped or 0)


class Outbox:
    """The dispatcher's side of the outbox: claim due rows, record attempts, count.

    Args:
        db: the open alert database.
        lease_s: how long a claim lasts unless renewed; a sender that has not renewed it
            by then is taken to have crashed and the row is due again (or, when its send had
            begun, settled by :meth:`settle_interrupted`).
    """

    def __init__(self, db: AlertDb, lease_s: float) -> None:
        self._db = db
        self._lease_s = lease_s

    async def claim(
        self, limit: int, now: datetime, no_resend: Sequence[str] = ()
    ) -> list[OutboxItem]:
        """Claim due outbox rows for sending (mark-before-send).

        A row is due when it is pending and its retry time has come, or when it was claimed
        by a sender whose lease ran out (that sender crashed) and either had not begun to send
        or sent to a receiver that de-duplicates on the idempotency key. Claiming sets
        ``status='sending'``, bumps ``attempts``, clears ``send_started_at`` and sets a lease,
        in its own committed transaction, before anything is sent. Rows are locked with SKIP
        LOCKED, so several dispatchers can claim at once. Call :meth:`settle_interrupted`
        first, so an interrupted attempt to a receiver that cannot de-duplicate is never
        claimed again.

        Args:
            limit: at most this many rows.
            now: the clock.
            no_resend: channels whose interrupted attempts are not claimed again (left for
                :meth:`settle_interrupted`).

        Returns:
            The claimed rows, oldest first.
        """
        async with self._db.tx("claim outbox") as conn:
            rows = await conn.fetch(
                """
                UPDATE alert_outbox o SET status = 'sending', attempts = o.attempts + 1,
                    lease_until = $2, send_started_at = NULL
                WHERE outbox_id IN (
                    SELECT outbox_id FROM alert_outbox
                    WHERE (status = 'pending' AND next_attempt_at <= $1)
                       OR (status = 'sending' AND lease_until <= $1
                           AND (send_started_at IS NULL OR NOT channel = ANY($4::text[])))
                    ORDER BY outbox_id LIMIT $3 FOR UPDATE SKIP LOCKED)
                RETURNING o.outbox_id, o.idempotency_key, o.alert_id, o.event, o.target,
                    o.channel, o.payload, o.attempts,
                    (SELECT grafana_annotation_id FROM alerts a WHERE a.alert_id = o.alert_id)
                        AS annotation_id
                """,
                now,
                now + timedelta(seconds=self._lease_s),
                limit,
                list(no_resend),
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

    async def settle_interrupted(self, now: datetime, no_resend: Sequence[str]) -> list[Unsettled]:
        """Set attempts that began sending and never finished to ``unknown`` (not re-sent).

        For receivers that cannot de-duplicate (``no_resend`` channels), an attempt whose
        sender stopped between "send began" and "result recorded" may or may not have been
        delivered; sending again could page twice. The row becomes ``unknown``, the attempt is
        recorded as such, and the alert's history gets a ``notification_unknown`` event, so a
        human can check the receiver. Only rows whose lease ran out are touched (their sender
        stopped renewing it).

        Args:
            now: the clock.
            no_resend: the channels that cannot de-duplicate.

        Returns:
            The rows set to ``unknown``.
        """
        if not no_resend:
            return []
        async with self._db.tx("settle interrupted outbox") as conn:
            rows = await conn.fetch(
                """
                UPDATE alert_outbox o SET status = 'unknown', lease_until = NULL,
                    last_error = $3
                WHERE outbox_id IN (
                    SELECT outbox_id FROM alert_outbox
                    WHERE status = 'sending' AND lease_until <= $1
                        AND send_started_at IS NOT NULL AND channel = ANY($2::text[])
                    ORDER BY outbox_id FOR UPDATE SKIP LOCKED)
                RETURNING o.outbox_id, o.alert_id, o.target, o.channel, o.attempts,
                    o.send_started_at, o.idempotency_key, o.event
                """,
                now,
                list(no_resend),
                UNKNOWN_ERROR,
            )
            for r in rows:
                await conn.execute(
                    """
                    INSERT INTO alert_notification_attempts (outbox_id, attempt, started_at,
                        finished_at, ok, error)
                    VALUES ($1, $2, $3, $4, false, $5)
                    """,
                    r["outbox_id"],
                    r["attempts"],
                    r["send_started_at"],
                    now,
                    UNKNOWN_ERROR,
                )
                await conn.execute(
                    """
                    INSERT INTO alert_events (alert_id, at, event, actor, detail)
                    VALUES ($1, $2, 'notification_unknown', 'dispatcher', $3)
                    """,
                    r["alert_id"],
                    now,
                    {
                        "outbox_id": r["outbox_id"],
                        "target": r["target"],
                        "channel": r["channel"],
                        "event": r["event"],
                        "attempt": r["attempts"],
                        "idempotency_key": r["idempotency_key"],
                        "send_started_at": r["send_started_at"].isoformat(),
                    },
                )
        return [
            Unsettled(
                outbox_id=r["outbox_id"],
                alert_id=r["alert_id"],
                target=r["target"],
                channel=r["channel"],
                attempt=r["attempts"],
            )
            for r in rows
        ]

    async def start(self, items: Sequence[OutboxItem], now: datetime) -> set[int]:
        """Record durably that these attempts begin to send, and renew their leases.

        Committed before the sends, so after a crash a row tells "never began" (safe to send
        again) from "began, outcome unknown". One transaction for all attempts starting
        together (one commit, not one per notification).

        Args:
            items: the claimed rows about to be sent.
            now: the clock.

        Returns:
            The outbox ids still claimed by these attempts; the others were taken over by
            another sender meanwhile and must not be sent.
        """
        if not items:
            return set()
        async with self._db.tx("start outbox attempts") as conn:
            rows = await conn.fetch(
                """
                UPDATE alert_outbox o SET send_started_at = $3, lease_until = $4
                FROM unnest($1::bigint[], $2::int[]) AS c(outbox_id, attempt)
                WHERE o.outbox_id = c.outbox_id AND o.attempts = c.attempt
                    AND o.status = 'sending'
                RETURNING o.outbox_id
                """,
                [i.outbox_id for i in items],
                [i.attempt for i in items],
                now,
                now + timedelta(seconds=self._lease_s),
            )
        return {int(r["outbox_id"]) for r in rows}

    async def renew(self, items: Sequence[OutboxItem], now: datetime) -> int:
        """Extend the leases of attempts still in flight (the sender is alive).

        Args:
            items: the claimed rows being sent.
            now: the clock.

        Returns:
            How many leases were renewed (claims lost meanwhile are not).
        """
        if not items:
            return 0
        async with self._db.tx("renew outbox leases") as conn:
            n = await conn.fetchval(
                """
                WITH r AS (
                    UPDATE alert_outbox o SET lease_until = $3
                    FROM unnest($1::bigint[], $2::int[]) AS c(outbox_id, attempt)
                    WHERE o.outbox_id = c.outbox_id AND o.attempts = c.attempt
                        AND o.status = 'sending'
                    RETURNING 1)
                SELECT count(*) FROM r
                """,
                [i.outbox_id for i in items],
                [i.attempt for i in items],
                now + timedelta(seconds=self._lease_s),
            )
        return int(n or 0)

    async def finish(
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

        Args:
            item: the claimed row.
            started_at: when the send began.
            finished_at: when it ended.
            ok: the receiver accepted it.
            error: why not, if not.
            response: what the receiver answered, if anything.
            retry_at: try again then (None with ``ok`` False: give up).
            annotation_id: the Grafana annotation created, kept on the alert for later
                updates (set once).

        Returns:
            The row's new status (or ``stale`` when the claim was lost).
        """
        if ok:
            status = "sent"
        elif retry_at is not None:
            status = "pending"
        else:
            status = "failed"
        async with self._db.tx("finish outbox") as conn:
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

    async def status_counts(self) -> dict[str, int]:
        """Outbox rows per status (health and tests)."""
        async with self._db.tx("outbox counts") as conn:
            rows = await conn.fetch("SELECT status, count(*) AS n FROM alert_outbox GROUP BY 1")
        return {r["status"]: int(r["n"]) for r in rows}

    async def pending_count(self) -> int:
        """Outbox rows waiting to be sent or being sent (counted on the due-rows index)."""
        async with self._db.tx("outbox pending") as conn:
            n = await conn.fetchval(
                "SELECT count(*) FROM alert_outbox WHERE status IN ('pending', 'sending')"
            )
        return int(n)
