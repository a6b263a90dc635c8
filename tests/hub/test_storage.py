"""The hub's storage: the Alembic migrations build exactly the ORM's schema, on SQLite (in WAL
mode) and on a real PostgreSQL, and opening an up-to-date database again changes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from autoresearch.hub.models import Base
from autoresearch.hub.storage import StorageError, open_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("fresh_postgres")
    return f"sqlite:///{tmp_path / 'hub.db'}"


def test_migrations_match_the_models_and_rerun_cleanly(url):
    for _ in range(2):
        sessions = open_database(url)
        with sessions() as s:
            conn = s.connection()
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert s.execute(text("select version_num from alembic_version")).scalar() == "0002"
            if url.startswith("sqlite"):
                assert s.execute(text("pragma journal_mode")).scalar() == "wal"
        sessions.kw["bind"].dispose()


def test_an_unreachable_database_says_where_and_how_to_fix():
    with pytest.raises(StorageError, match="fix: check that the server runs"):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="unsupported"):
        open_database("mysql://x")
