"""Fault rounds: sizes and the database come from the environment (``make chaos N=50
DB=postgresql`` sets ``CHAOS_REFUNDS`` and ``CHAOS_DB``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The repository tests' fresh-schema helper, and their check that the server is reachable.
from tests.db.conftest import _postgres_schema, postgres_problem  # noqa: F401  (fixture)


@pytest.fixture
def chaos_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite unless ``CHAOS_DB=postgresql``: then a fresh schema of the test server."""
    if os.environ.get("CHAOS_DB", "sqlite") != "postgresql":
        yield f"sqlite:///{tmp_path / 'refundflow.db'}"
        return
    problem = request.getfixturevalue("postgres_problem")
    if problem is not None:
        pytest.fail(problem)
    yield from _postgres_schema()
