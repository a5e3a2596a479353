-- The on-call console: the key signing acknowledgement links and sessions, and every link used.
-- Idempotent: safe to run on every start.

-- One row: the HMAC key made by the first process that needed it (when console.link_secret is
-- not set), so the alert service that signs links and the API that checks them agree.
CREATE TABLE IF NOT EXISTS console_keys (
    id          smallint    PRIMARY KEY CHECK (id = 1),
    key         bytea       NOT NULL CHECK (length(key) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A link works once: its nonce is recorded with who it was sent to and when it was used.
CREATE TABLE IF NOT EXISTS alert_link_uses (
    nonce       text        PRIMARY KEY,
    alert_id    bigint      NOT NULL REFERENCES alerts (alert_id),
    purpose     text        NOT NULL,
    recipient   text        NOT NULL,
    used_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_link_uses_by_alert ON alert_link_uses (alert_id);
