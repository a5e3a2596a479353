-- CEMS unit-hours for the quarterly accounting (issue 10): one row per unit and hour, read
-- from the detection engine's hourly derived series. `derived` is a plain table (not a
-- hypertable), so this is a plain view on every storage path; the report reads it for a
-- time range, so its cost follows units x hours, never the raw readings.
CREATE OR REPLACE VIEW cems_unit_1h AS
SELECT ts                                                        AS bucket,
       device_id,
       max(value) FILTER (WHERE series = 'co2_mass_t_h_1h')      AS co2_t_h,
       coalesce(bool_or(valid) FILTER (WHERE series = 'co2_mass_t_h_1h'), false) AS valid,
       max(value) FILTER (WHERE series = 'valid_minutes_1h')     AS valid_minutes,
       max(value) FILTER (WHERE series = 'load_mw_1h')           AS load_mw,
       max(value) FILTER (WHERE series = 'site_pressure_minutes_1h') AS site_pressure_minutes
FROM derived
WHERE series IN ('co2_mass_t_h_1h', 'valid_minutes_1h', 'load_mw_1h',
                 'site_pressure_minutes_1h')
GROUP BY ts, device_id;
