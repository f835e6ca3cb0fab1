"""Apply the Alembic migrations programmatically, from any working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from refundflow.db.engine import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config(str(MIGRATIONS / "alembic.ini"))
    # Absolute, so neither the working directory nor the ini file's location matters.
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _run(url: str | URL, action: str, revision: str) -> None:
    config = alembic_config()
    engine = make_engine(url)
    try:
        # The URL travels as a connection, not as an ini option, where '%' in a password or
        # in libpq options would be read as interpolation.
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> None:
    _run(url, "upgrade", revision)


def downgrade(url: str | URL, revision: str = "base") -> None:
    _run(url, "downgrade", revision)


def current(url: str | URL) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
