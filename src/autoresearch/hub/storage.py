"""Where the hub keeps its tables: SQLite in WAL mode by default, PostgreSQL for production.

`open_database(url)` creates the engine and brings the schema to the newest Alembic revision
before anything else touches it, so a hub started on an older database migrates it first and a
hub never runs against a schema it does not know. SQLite is opened with WAL and a busy timeout:
readers never block the one writer, and concurrent writers wait instead of failing.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from autoresearch.core.errors import AutoresearchError

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_MS = 10_000  # concurrent writers wait this long for the write lock before an error
POOL_SIZE = 16  # PostgreSQL connections: one per request thread of the server's pool, about


class StorageError(AutoresearchError):
    """The hub's database cannot be opened or migrated."""


def default_url(state: Path) -> str:
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state / 'hub.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at each checkpoint, safe against kill -9
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.close()
        return engine
    if url.startswith("postgresql"):
        return create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_pre_ping=True)
    raise StorageError(f"hub database {url!r}: unsupported\n  fix: use sqlite:///PATH or "
                       "postgresql+psycopg://USER@HOST:PORT/DB")


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision (Alembic, run in this process)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(url: str) -> sessionmaker[Session]:
    engine = make_engine(url)
    try:
        migrate(engine)
    except Exception as e:
        raise StorageError(f"hub database {engine.url.render_as_string(hide_password=True)}: cannot open or "
                           f"migrate it: {type(e).__name__}: {str(e)[:300]}\n  fix: check that the server runs "
                           "and the URL, user and database are right") from e
    return sessionmaker(engine, expire_on_commit=False)
