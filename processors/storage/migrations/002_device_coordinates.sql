-- Where a device is (WGS 84 degrees), for the region overview's map. Nullable: devices that
-- announce themselves by sending data have no position until the registry records one.
-- IF NOT EXISTS: the device registry may add the same columns; whichever runs first wins.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS lat double precision NULL
    CHECK (lat BETWEEN -90 AND 90);
ALTER TABLE devices ADD COLUMN IF NOT EXISTS lon double precision NULL
    CHECK (lon BETWEEN -180 AND 180);
