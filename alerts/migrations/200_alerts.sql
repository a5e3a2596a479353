-- Alert lifecycle, history, silences and the transactional notification outbox.
-- Idempotent: safe to run on every start.

CREATE TABLE IF NOT EXISTS alerts (
    alert_id            bigserial PRIMARY KEY,
    group_key           text        NOT NULL,
    rule                text        NOT NULL,
    grp                 text        NOT NULL,
    network             text        NOT NULL,
    site                text        NOT NULL,
    kind                text        NOT NULL,
    severity            text        NOT NULL CHECK (severity IN ('info', 'maintenance', 'warning', 'critical')),
    state               text        NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    condition_active    boolean     NOT NULL DEFAULT true,
    device_id           text        NOT NULL,
    metric              text        NOT NULL,
    detector            text        NOT NULL,
    value               double precision NOT NULL,
    threshold           double precision,
    location            text,
    started_at          timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    acknowledged_at     timestamptz,
    acknowledged_by     text,
    resolve_due_at      timestamptz,
    resolved_at         timestamptz,
    resolved_by         text,
    escalation_level    integer     NOT NULL DEFAULT 0,
    next_escalation_at  timestamptz,
    silenced_until      timestamptz,
    grafana_annotation_id bigint,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- The grouping and de-duplication guarantee: one active alert per group key.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_active_per_group
    ON alerts (group_key) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_by_site ON alerts (network, site, created_at DESC);
CREATE INDEX IF NOT EXISTS alerts_escalation_due
    ON alerts (next_escalation_at) WHERE state = 'open' AND next_escalation_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS alerts_resolve_due
    ON alerts (resolve_due_at) WHERE state <> 'resolved' AND NOT condition_active;

-- Every detection seen, once (detection_id is stable across redelivery).
CREATE TABLE IF NOT EXISTS alert_detections (
    detection_id  text        PRIMARY KEY,
    alert_id      bigint      NOT NULL REFERENCES alerts (alert_id),
    device_id     text        NOT NULL,
    metric        text        NOT NULL,
    detector      text        NOT NULL,
    severity      text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('open', 'cleared')),
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    value         double precision NOT NULL,
    threshold     double precision,
    record        jsonb       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_detections_by_alert ON alert_detections (alert_id, state);

-- The alert's whole history: state changes, who acknowledged, suppressed notifications.
CREATE TABLE IF NOT EXISTS alert_events (
    event_id  bigserial   PRIMARY KEY,
    alert_id  bigint      NOT NULL REFERENCES alerts (alert_id),
    at        timestamptz NOT NULL,
    event     text        NOT NULL,
    actor     text        NOT NULL,
    detail    jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id, event_id);

-- Silences and maintenance windows (calibration): suppress notifications, keep the record.
CREATE TABLE IF NOT EXISTS alert_silences (
    silence_id  bigserial   PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('silence', 'maintenance')),
    network     text,
    site        text,
    device_id   text,
    grp         text,
    alert_id    bigint REFERENCES alerts (alert_id),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS alert_silences_active ON alert_silences (ends_at, starts_at);

-- Transactional outbox: written in the same transaction as the alert change it announces.
CREATE TABLE IF NOT EXISTS alert_outbox (
    outbox_id        bigserial   PRIMARY KEY,
    idempotency_key  text        NOT NULL UNIQUE,
    alert_id         bigint      NOT NULL REFERENCES alerts (alert_id),
    event            text        NOT NULL,
    target           text        NOT NULL,
    channel          text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    last_error       text,
    silence_id       bigint
);
CREATE INDEX IF NOT EXISTS alert_outbox_due
    ON alert_outbox (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX IF NOT EXISTS alert_outbox_by_alert ON alert_outbox (alert_id);

-- Every send attempt and its result.
CREATE TABLE IF NOT EXISTS alert_notification_attempts (
    attempt_id   bigserial   PRIMARY KEY,
    outbox_id    bigint      NOT NULL REFERENCES alert_outbox (outbox_id),
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    ok           boolean     NOT NULL,
    error        text,
    response     text
);
CREATE INDEX IF NOT EXISTS alert_attempts_by_outbox ON alert_notification_attempts (outbox_id);
