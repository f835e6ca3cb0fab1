"""Persistence (docs/architecture.md, "Books and the database"): SQLModel tables, engines and
sessions, Alembic migrations and repositories, on SQLite (embedded default) or PostgreSQL."""

from refundflow.db.engine import Session, make_engine, new_session, session_scope
from refundflow.db.migrate import upgrade

__all__ = ["Session", "make_engine", "new_session", "session_scope", "upgrade"]
