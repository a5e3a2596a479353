-- Detection output: one row per detection event and the derived series (issue 3).
-- Other packages read these names (alerts, Grafana); add columns in new files, never rename.

-- One row per event; the CLEARED record updates the OPEN row (same detection_id).
CREATE TABLE IF NOT EXISTS detections (
    detection_id text PRIMARY KEY,            -- stable: device, metric, detector, onset time
    state        text NOT NULL,               -- open | cleared
    device_id    text NOT NULL,
    kind         text NOT NULL,               -- city, cems, mine, leak, generic
    network      text NOT NULL,
    site         text NOT NULL,
    metric       text NOT NULL,
    detector     text NOT NULL,               -- threshold_alarm, power_cut, release, ...
    severity     text NOT NULL,               -- info, maintenance, warning, critical
    location     text NULL,                   -- mine location class
    started_at   timestamptz NOT NULL,        -- event time of the onset reading
    ended_at     timestamptz NULL,            -- event time it cleared; NULL while open
    score        double precision NOT NULL,
    value        double precision NOT NULL,   -- the reading (or derived value) at onset
    threshold    double precision NULL,
    evidence     jsonb NOT NULL DEFAULT '{}'::jsonb,
    stored_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS detections_device_idx ON detections (device_id, started_at DESC);
CREATE INDEX IF NOT EXISTS detections_started_idx ON detections (started_at DESC);
CREATE INDEX IF NOT EXISTS detections_open_idx ON detections (severity) WHERE ended_at IS NULL;

-- Derived series: CEMS minute/hour mass rates, flows, intensities, validity; city
-- background and enhancement. `valid` says whether the point meets the validity rules.
CREATE TABLE IF NOT EXISTS derived (
    ts        timestamptz NOT NULL,
    device_id text NOT NULL,
    series    text NOT NULL,                  -- e.g. co2_mass_t_h, co2_mass_t_h_1h
    value     double precision NULL,
    valid     boolean NOT NULL,
    PRIMARY KEY (device_id, series, ts)
);

CREATE INDEX IF NOT EXISTS derived_series_ts_idx ON derived (series, ts DESC);

-- Per-city urban enhancement (Baotou, Ordos): the city is the network segment of device_id.
CREATE OR REPLACE VIEW city_enhancement_1h AS
SELECT date_trunc('hour', ts)       AS bucket,
       split_part(device_id, '/', 1) AS city,
       series,
       avg(value)                    AS avg,
       max(value)                    AS max,
       count(*)                      AS n,
       count(DISTINCT device_id)     AS stations
FROM derived
WHERE series LIKE '%\_enhancement'
GROUP BY 1, 2, 3;
