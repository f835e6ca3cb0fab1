"""Fixtures for the repository tests: every test runs on SQLite and on PostgreSQL.

Each test gets a database migrated by the real Alembic migration: a fresh SQLite file, or a
fresh PostgreSQL schema (``rf_test_<random>``, dropped afterwards) selected through the
connection's ``search_path``, so parallel or aborted runs never see each other's rows.
PostgreSQL comes from ``REFUNDFLOW_TEST_POSTGRES_URL``. When it cannot be reached the
PostgreSQL half is skipped locally, but fails when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlmodel import Session

from refundflow.db.engine import make_engine, new_session, normalize_url
from refundflow.db.migrate import upgrade
from refundflow.db.repository import upsert_merchant
from tests.db.builders import MERCHANT

PG_URL = os.environ.get(
    "REFUNDFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can (checked once per run)."""
    engine = create_engine(normalize_url(PG_URL), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL unreachable at {make_url(PG_URL)!r}: {exc}"
    finally:
        engine.dispose()
    return None


def _require_postgres(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem} (CI=true: the PostgreSQL tests must run, not skip)")
    pytest.skip(problem)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of each kind; the URL carries the password unmasked."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'refundflow.db'}"
        upgrade(url)
        yield url
        return
    _require_postgres(request.getfixturevalue("postgres_problem"))
    yield from _postgres_schema()


def _postgres_schema() -> Iterator[str]:
    schema = f"rf_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        scoped = normalize_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        url = scoped.render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def dialect(db_url: str) -> str:
    return normalize_url(db_url).get_backend_name()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with new_session(engine) as session:
        upsert_merchant(session, merchant_id=MERCHANT, name="Test shop")
        session.commit()
        yield session
