-- Exactly-once pages where the receiver cannot de-duplicate (DingTalk, WeCom robots).
-- A sender records that an attempt has started (send_started_at) in its own committed
-- transaction just before it sends, and marks the row sent right after. A row found leased
-- out and expired with send_started_at set is an attempt whose outcome nobody knows: per
-- notifier it is re-sent (receivers de-duplicating on the idempotency key) or set to
-- 'unknown' for a human to check. Idempotent: safe to run on every start.

ALTER TABLE alert_outbox ADD COLUMN IF NOT EXISTS send_started_at timestamptz;

ALTER TABLE alert_outbox DROP CONSTRAINT IF EXISTS alert_outbox_status_check;
ALTER TABLE alert_outbox ADD CONSTRAINT alert_outbox_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed', 'unknown'));
