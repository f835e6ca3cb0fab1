"""Column helpers every table module shares, and the constraint naming convention."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    text,
)
from sqlmodel import Field, SQLModel

from refundflow.db.types import Money, UtcDateTime, utcnow

# Deterministic names, so the migration and error translation can refer to constraints by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = 128
"""Length of outside ids (the domain's ``Id`` allows up to 128 characters)."""

_NOW = {"server_default": text("CURRENT_TIMESTAMP")}


def created() -> Any:
    return Field(default_factory=utcnow, sa_type=UtcDateTime, sa_column_kwargs=_NOW)


def money(default: int | None = None) -> Any:
    if default is None:
        return Field(sa_type=Money)
    return Field(default=default, sa_type=Money, sa_column_kwargs={"server_default": "0"})
