-- Quarterly carbon early warning (issue 10): daily aggregates the report reads, issued
-- reports with their revisions, and the warnings raised as alerts.
-- Other packages read these names (dashboards); add columns in new files, never rename.

-- One row per device, metric and local calendar day (the report's time zone), rolled up
-- from the hourly aggregate readings_1h by reports.aggregates.refresh_daily. The report
-- reads this table, never raw readings: its cost grows with sources x days.
CREATE TABLE IF NOT EXISTS readings_1d (
    day         date NOT NULL,
    device_id   text NOT NULL,
    metric      text NOT NULL,
    n_valid     bigint NOT NULL,             -- readings flagged N
    n_all       bigint NOT NULL,             -- every reading
    sum_valid   double precision NULL,       -- sum of the N readings (mean = sum / n)
    min         double precision NULL,
    max         double precision NULL,
    data_hours  smallint NOT NULL,           -- hours with any reading
    valid_hours smallint NOT NULL,           -- hours meeting the kind's validity rule
    PRIMARY KEY (device_id, metric, day)
);
CREATE INDEX IF NOT EXISTS readings_1d_day_idx ON readings_1d (day);

-- Daily roll-up of the detection service's derived series (city enhancement), same idea.
CREATE TABLE IF NOT EXISTS derived_1d (
    day        date NOT NULL,
    device_id  text NOT NULL,
    series     text NOT NULL,
    n          bigint NOT NULL,              -- valid points
    sum        double precision NULL,
    PRIMARY KEY (device_id, series, day)
);
CREATE INDEX IF NOT EXISTS derived_1d_day_idx ON derived_1d (series, day);

-- Every issued report: one row per quarter and revision.
CREATE TABLE IF NOT EXISTS quarterly_reports (
    report_id   bigserial PRIMARY KEY,
    quarter     text NOT NULL,               -- 2026Q3
    revision    integer NOT NULL,            -- 1 = first issue; late data -> 2, 3, ...
    issued_at   timestamptz NOT NULL DEFAULT now(),
    trigger     text NOT NULL,               -- schedule | on_demand
    data_from   timestamptz NOT NULL,        -- the quarter's first instant
    data_to     timestamptz NOT NULL,        -- the first instant after it
    settings    jsonb NOT NULL,              -- the report settings used
    levels      jsonb NOT NULL,              -- "source_type:source_id" -> level
    report      jsonb NOT NULL,              -- the JSON version
    html        text NOT NULL,               -- the self-contained HTML version
    UNIQUE (quarter, revision)
);

-- The warnings of each issued report (Grafana's quarterly-status dashboard reads these).
CREATE TABLE IF NOT EXISTS quarterly_warnings (
    report_id   bigint NOT NULL REFERENCES quarterly_reports (report_id) ON DELETE CASCADE,
    quarter     text NOT NULL,
    revision    integer NOT NULL,
    source_type text NOT NULL,               -- unit, plant, region, city, mine, leak_site, device
    source_id   text NOT NULL,
    region      text NULL,
    level       text NOT NULL CHECK (level IN ('green', 'yellow', 'orange', 'red')),
    reasons_zh  text[] NOT NULL,
    reasons_en  text[] NOT NULL,
    figures     jsonb NOT NULL,
    PRIMARY KEY (report_id, source_type, source_id)
);
CREATE INDEX IF NOT EXISTS quarterly_warnings_quarter_idx ON quarterly_warnings (quarter, revision);

-- Orange and red warnings published as detections (the alert service pages on them): one
-- row per source, quarter and level, so a re-issue with the same level publishes nothing.
CREATE TABLE IF NOT EXISTS quarterly_warning_alerts (
    detection_id text PRIMARY KEY,
    quarter      text NOT NULL,
    source_type  text NOT NULL,
    source_id    text NOT NULL,
    level        text NOT NULL,
    report_id    bigint NOT NULL REFERENCES quarterly_reports (report_id),
    published_at timestamptz NOT NULL DEFAULT now(),
    cleared_at   timestamptz NULL             -- a later revision changed the level
);
CREATE INDEX IF NOT EXISTS quarterly_warning_alerts_source_idx
    ON quarterly_warning_alerts (quarter, source_type, source_id) WHERE cleared_at IS NULL;
