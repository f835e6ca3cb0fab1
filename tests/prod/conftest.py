"""A PostgreSQL database of the run's own: created under a unique name on the test server and
dropped afterwards (other suites share the server), empty, so `refundflow setup` is what
creates its tables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from refundflow.db.engine import normalize_url
from tests.db.conftest import PG_URL, _require_postgres, postgres_problem  # noqa: F401  (fixture)


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[str]:
    _require_postgres(request.getfixturevalue("postgres_problem"))
    name = f"rf_prod_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield normalize_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # FORCE: a process of the stack killed mid-transaction may still hold a session.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
