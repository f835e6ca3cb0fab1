#!/bin/sh
# Run once by the postgres image on an empty volume: Temporal's two databases and refundflow's,
# each owned by its own role, passwords from the compose secrets.
set -eu
temporal_password=$(cat /run/secrets/temporal_db_password)
refundflow_password=$(cat /run/secrets/refundflow_db_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
  -v temporal_password="$temporal_password" -v refundflow_password="$refundflow_password" <<'SQL'
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE ROLE refundflow LOGIN PASSWORD :'refundflow_password';
CREATE DATABASE refundflow OWNER refundflow;
SQL
