"""The migration, the engine settings and the configuration."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect, text
from sqlalchemy.exc import StatementError
from sqlmodel import SQLModel

from refundflow.db import models
from refundflow.db.engine import make_engine, normalize_url, session_scope
from refundflow.db.migrate import current, downgrade, upgrade
from refundflow.db.repository import append_audit, list_audit
from refundflow.settings import Settings, get_settings

TRIGGERS = {
    "sqlite": {
        "trg_audit_events_no_update",
        "trg_audit_events_no_delete",
        "trg_ledger_postings_balanced",
        "trg_ledger_postings_no_update",
        "trg_ledger_postings_no_delete",
        "trg_ledger_entries_open",
        "trg_ledger_entries_no_update",
        "trg_ledger_entries_no_delete",
    },
    "postgresql": {
        "trg_audit_events_no_change",
        "trg_audit_events_no_truncate",
        "trg_ledger_postings_balanced",
        "trg_ledger_postings_no_change",
        "trg_ledger_postings_no_truncate",
        "trg_ledger_entries_open",
        "trg_ledger_entries_no_change",
        "trg_ledger_entries_no_truncate",
    },
}


def _triggers(engine: Engine, dialect: str) -> set[str]:
    sql = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "postgresql": "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace",
    }[dialect]
    with engine.connect() as conn:
        return set(conn.execute(text(sql)).scalars())


def test_migration_creates_exactly_the_models(engine: Engine, db_url: str, dialect: str) -> None:
    assert current(db_url) == "0004"
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    inspector = inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        expected = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        found = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert found == expected, table.name
    assert _triggers(engine, dialect) == TRIGGERS[dialect]


def test_upgrade_is_independent_of_the_working_directory(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    upgrade(db_url)  # already at head: nothing to do, nothing breaks
    assert current(db_url) == "0004"


def test_downgrade_and_upgrade_again(engine: Engine, db_url: str, dialect: str) -> None:
    downgrade(db_url)
    assert current(db_url) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(db_url)
    engine.dispose()
    assert _triggers(engine, dialect) == TRIGGERS[dialect]


def test_sqlite_engine_switches_guards_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'rf.db'}"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("foreign_keys", "journal_mode", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert pragmas == {"foreign_keys": 1, "journal_mode": "wal", "busy_timeout": 30000}
    assert (tmp_path / "nested" / "dir" / "rf.db").exists()


def test_timestamps_must_be_aware(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_scope(engine) as session:
        append_audit(session, refund_id="r", kind="k", actor="a", at=datetime(2026, 3, 1, 10))
    with session_scope(engine, readonly=True) as session:
        assert list_audit(session, refund_id="r") == []


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REFUNDFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("REFUNDFLOW_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/refundflow.db"
    # Unset: Temporal's own client configuration decides (refundflow.connection).
    assert (settings.temporal_address, settings.temporal_namespace, settings.task_queue) == (
        None,
        None,
        "refunds",
    )
    monkeypatch.setenv("REFUNDFLOW_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().resolved_database_url == "postgresql+psycopg://u@h/db"
    assert get_settings() is get_settings()


def test_every_table_is_in_the_models() -> None:
    names = {t.name for t in SQLModel.metadata.sorted_tables}
    assert names == {
        "merchants", "api_keys", "orders", "order_lines", "order_discounts", "order_payments",
        "tender_balances", "refunds", "refund_lines", "reservations", "payouts", "approvals",
        "ledger_postings", "ledger_entries", "audit_events", "outbox", "idempotency_keys",
        "webhook_events", "policies", "customer_balances",
    }  # fmt: skip
    assert models.__all__
