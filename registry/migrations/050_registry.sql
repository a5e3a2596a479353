-- The device registry: what each device is and how it may connect. Joined to `devices`
-- (filled by the storing processor from readings) by device_id; that table is left as it is.

CREATE TABLE IF NOT EXISTS registry_devices (
    device_id           text PRIMARY KEY,          -- network/site/device, as in devices
    kind                text NOT NULL CHECK (kind IN ('city', 'cems', 'mine', 'leak')),
    network             text NOT NULL,
    site                text NOT NULL,
    device              text NOT NULL,
    enabled             boolean NOT NULL DEFAULT true,
    mqtt_username       text NOT NULL UNIQUE,
    mqtt_password_hash  text NULL,                 -- PBKDF2-SHA512, never the password
    hj212_mn            text NULL UNIQUE,          -- HJ 212 MN of the device's data logger
    hj212_password_hash text NULL,                 -- its PW, hashed likewise
    location_class      text NULL,                 -- mine CH4 sensor class: T0..T8, returns
    units               jsonb NOT NULL DEFAULT '{}'::jsonb,  -- metric -> unit it reports
    cems_class          text NULL,                 -- CEMS unit benchmark class
    site_pressure_pa    double precision NULL,     -- barometric pressure at the site
    site_altitude_m     double precision NULL,
    sampling_interval_s double precision NULL,
    lat                 double precision NULL CHECK (lat BETWEEN -90 AND 90),
    lon                 double precision NULL CHECK (lon BETWEEN -180 AND 180),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (device_id = network || '/' || site || '/' || device)
);

-- Services that cache the registry (the bridge, the detector) hear of every change at once.
CREATE OR REPLACE FUNCTION registry_devices_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('ghgwatch_registry',
                      coalesce(NEW.device_id, OLD.device_id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS registry_devices_changed ON registry_devices;
CREATE TRIGGER registry_devices_changed
    AFTER INSERT OR UPDATE OR DELETE ON registry_devices
    FOR EACH ROW EXECUTE FUNCTION registry_devices_notify();
