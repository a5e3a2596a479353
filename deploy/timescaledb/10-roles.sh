#!/bin/sh
# Runs once, when the TimescaleDB container initialises an empty data directory
# (/docker-entrypoint-initdb.d). Creates the read-only role Grafana uses; ghgwatch's own
# tables are created later by `ghgwatch db migrate` (the migrate service), owned by
# POSTGRES_USER, and readable by grafana_reader through the default privileges below.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v reader_password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE ghgwatch TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
-- Grafana queries must never run away with the database.
ALTER ROLE grafana_reader SET statement_timeout = '30s';
SQL
