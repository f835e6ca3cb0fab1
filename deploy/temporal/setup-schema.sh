#!/bin/sh
# Temporal's schema in the databases deploy/postgres/init.sql created; safe to run again
# (setup-schema -v 0.0 is a no-op on a set-up database, update-schema applies what is new).
set -eu
: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}"
tool="temporal-sql-tool --plugin postgres12 --ep ${POSTGRES_SEEDS} -u ${POSTGRES_USER} -p ${DB_PORT:-5432}"
schema=/etc/temporal/schema/postgresql/v12
$tool --db temporal setup-schema -v 0.0
$tool --db temporal update-schema -d "$schema/temporal/versioned"
$tool --db temporal_visibility setup-schema -v 0.0
$tool --db temporal_visibility update-schema -d "$schema/visibility/versioned"
