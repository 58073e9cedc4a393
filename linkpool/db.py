"""Engines, transactions and migrations.

SQLite runs in WAL mode with ``synchronous = FULL`` and a busy timeout, and write transactions
start with ``BEGIN IMMEDIATE``: a deferred transaction that later upgrades to a write lock fails at once with
"database is locked" and ignores ``busy_timeout``, which is exactly the claim's situation.
PostgreSQL connections are not pre-pinged (a ping per checkout would double the claim's round
trips): when the server restarts, the first statement on a dead connection fails with a
DatabaseError, SQLAlchemy invalidates the whole pool, and the next statement reconnects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicError
from sqlalchemy.engine import Connection, Engine

from linkpool.config import database_url_problem, normalize_database_url
from linkpool.errors import ConfigError, DatabaseError, DuplicateRecord, SchemaNotMigrated


def _migrations_dir() -> Path:
    """``migrations/`` of a checkout, else the copy a wheel carries as ``linkpool/_migrations``."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "migrations"
    return checkout if (checkout / "env.py").is_file() else package / "_migrations"


MIGRATIONS_DIR = _migrations_dir()
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys = ON",
)
"""Set on every SQLite connection."""
SQLITE_FILE_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL")
"""Set on every connection to a SQLite file. ``synchronous = NORMAL`` in WAL mode keeps commits
across an application crash but not across a power loss or an OS crash: a claimed link could
become available again and go to a second recipient. FULL syncs the WAL on every commit."""
_IMMEDIATE = "linkpool_immediate"


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine configured for linkpool's concurrency model on SQLite or PostgreSQL.

    Statement parameters are kept out of errors and logs: they carry personal link URLs."""
    kwargs.setdefault("hide_parameters", True)
    url = normalize_database_url(url)
    try:
        parsed = _password_out_of_query(sa.engine.make_url(url))
    except sa.exc.ArgumentError:
        raise DatabaseError(f"{_redact(url)} is not a database URL") from None
    problem = database_url_problem(parsed.host)
    if problem:
        raise DatabaseError(f"the database URL {problem}")
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", False)
    try:
        return sa.create_engine(parsed, **kwargs)
    except sa.exc.NoSuchModuleError:
        raise DatabaseError(
            f"{parsed.get_backend_name()!r} is not a supported database: "
            "use a sqlite:/// or postgresql:// URL"
        ) from None
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"the driver for {parsed.get_backend_name()} is not installed ({exc.name}); "
            "for PostgreSQL install linkpool[postgres]"
        ) from None


class DatabaseFileWatch:
    """Notices a SQLite database file deleted or replaced under a long-running process.

    SQLite keeps writing to the file it opened even once it is unlinked, so a daemon whose file
    was deleted (or swapped for a fresh one) would go on provisioning lists into a ledger no one
    else reads: they would be orphans of the new file. ``check`` compares the file's identity
    (device and inode) with the one it had when the watch began. PostgreSQL: nothing to watch.
    """

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
        in_memory = not database or database == ":memory:" or database.startswith("file:")
        self.path: Path | None = None if in_memory else Path(str(database)).resolve()
        self.identity = _file_identity(self.path) if self.path is not None else None

    def check(self) -> None:
        """DatabaseError if the file vanished or is another file now."""
        if self.path is None or _file_identity(self.path) == self.identity:
            return
        raise DatabaseError(
            f"the SQLite database {self.path} was deleted or replaced while linkpool ran: "
            "stopping, so that nothing more is written to a ledger no one reads; restore the "
            "file (or point [database] url at the new one) and start again"
        )


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _password_out_of_query(url: sa.engine.URL) -> sa.engine.URL:
    """``?password=…`` moved to the URL's password, which every repr and log masks (the
    query's wins, as it would in the driver's connection arguments)."""
    password = url.query.get("password")
    if password is None:
        return url
    value = password if isinstance(password, str) else password[-1]
    return url.difference_update_query(["password"]).set(password=value)


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        pragmas: tuple[str, ...] = SQLITE_PRAGMAS
        if engine.url.database not in (None, "", ":memory:"):
            pragmas += SQLITE_FILE_PRAGMAS
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        # Straight to the driver: this runs on every transaction, the claim's included.
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the write lock up front on SQLite (a no-op elsewhere)."""
    with translate_errors(), engine.connect() as connection:
        connection = connection.execution_options(**{_IMMEDIATE: True})
        with connection.begin():
            yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with translate_errors(), engine.connect() as connection, connection.begin():
        yield connection


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver failures into DatabaseError / SchemaNotMigrated / DuplicateRecord with a
    message that helps (and never the statement's parameters)."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise DuplicateRecord() from exc
    except (sa.exc.DatabaseError, sa.exc.InterfaceError) as exc:  # e.g. "file is not a database"
        raise database_error(exc) from exc


def database_error(exc: sa.exc.DBAPIError) -> DatabaseError:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    lowered = text.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return SchemaNotMigrated()
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return DatabaseError(
        f"database error: {first_line}; check [database] url and that the database is up"
    )


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "the database URL"


def alembic_config(engine: Engine | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest). ConfigError for a revision
    this linkpool does not have; DatabaseError for a database newer than this linkpool."""
    if revision != "head" and not _known_revision(revision):
        raise ConfigError(
            f"unknown revision {revision!r}: this linkpool's revisions end at "
            f"{head_revision()} (give one of them, or leave --revision out for the newest)"
        )
    check_not_newer(engine)
    with translate_errors():
        alembic_command.upgrade(alembic_config(engine), revision)


def _known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except AlembicError:
        return False


def check_not_newer(engine: Engine) -> None:
    """DatabaseError when the database was migrated by a newer linkpool: "run db upgrade"
    would not help, and this version must not write to a schema it does not know."""
    current = current_revision(engine)
    if current is not None and not _known_revision(current):
        raise DatabaseError(
            f"this database is newer than this linkpool: it is at revision {current!r}, and "
            f"this version knows revisions up to {head_revision()}; upgrade linkpool (or use "
            "the version that migrated it)"
        )


def downgrade(engine: Engine, revision: str) -> None:
    with translate_errors():
        alembic_command.downgrade(alembic_config(engine), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with read_transaction(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_migrated(engine: Engine) -> None:
    """Raise SchemaNotMigrated unless the database is at the newest migration (and
    DatabaseError, saying so, when it is at one newer than this linkpool)."""
    check_not_newer(engine)
    if current_revision(engine) != head_revision():
        raise SchemaNotMigrated()
