-- Core storage schema: devices, raw readings, dead letters.
-- Other packages rely on these names; add columns in new migrations, never rename.

CREATE TABLE IF NOT EXISTS devices (
    device_id       text PRIMARY KEY,          -- network/site/device
    kind            text NOT NULL,             -- city, cems, mine, leak
    network         text NOT NULL,
    site            text NOT NULL,
    device          text NOT NULL,
    location        text NULL,                 -- mine sensor location class (T0, T1, ...)
    first_seen      timestamptz NOT NULL,      -- min received_at
    last_seen       timestamptz NOT NULL,      -- max received_at
    last_reading_ts timestamptz NULL,          -- max device (measurement) time
    readings_count  bigint NOT NULL DEFAULT 0  -- readings actually stored (redelivery excluded)
);

CREATE TABLE IF NOT EXISTS readings (
    ts          timestamptz NOT NULL,               -- device measurement time (UTC)
    device_id   text NOT NULL,
    metric      text NOT NULL,                      -- key of ingest METRICS, unit in the name
    value       double precision NOT NULL,
    flag        text NOT NULL DEFAULT 'N',          -- HJ 212-2017 data flag letter
    received_at timestamptz NOT NULL,               -- when the bridge received the message
    stored_at   timestamptz NOT NULL DEFAULT now(), -- when the storing transaction began
    PRIMARY KEY (device_id, metric, ts)
);

-- The same bad bytes on the same topic are one row; every delivery of them (a device
-- repeating itself or a Kafka redelivery after a crash) increments `occurrences`.
CREATE TABLE IF NOT EXISTS dead_letters (
    id               bigserial PRIMARY KEY,
    mqtt_topic       text NOT NULL,
    device_id        text NULL,
    reason           text NOT NULL,
    detail           text NOT NULL,
    payload          bytea NOT NULL,
    payload_sha256   bytea NOT NULL,
    received_at      timestamptz NOT NULL,     -- first time seen
    last_received_at timestamptz NOT NULL,     -- latest time seen
    occurrences      integer NOT NULL DEFAULT 1,
    UNIQUE (mqtt_topic, payload_sha256)
);

CREATE INDEX IF NOT EXISTS dead_letters_received_idx ON dead_letters (last_received_at DESC);
CREATE INDEX IF NOT EXISTS dead_letters_reason_idx ON dead_letters (reason, last_received_at DESC);
CREATE INDEX IF NOT EXISTS devices_kind_idx ON devices (kind, network, site);
