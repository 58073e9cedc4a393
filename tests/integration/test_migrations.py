"""Every migration runs up and down on SQLite and PostgreSQL, and the migrated schema is
exactly what the models describe (autogenerate finds nothing to do)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from linkpool.db import (
    alembic_config,
    check_migrated,
    create_engine,
    current_revision,
    downgrade,
    upgrade,
)
from linkpool.errors import SchemaNotMigrated
from linkpool.models import metadata


def revisions_oldest_first() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def schema_differences(engine: sa.engine.Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def walk_up_and_down(engine: sa.engine.Engine) -> None:
    downgrade(engine, "base")
    assert current_revision(engine) is None
    with pytest.raises(SchemaNotMigrated):
        check_migrated(engine)
    for revision in revisions_oldest_first():
        upgrade(engine, revision)
        assert current_revision(engine) == revision
    assert schema_differences(engine) == []
    check_migrated(engine)
    for revision in reversed(revisions_oldest_first()):
        assert current_revision(engine) == revision
        downgrade(engine, "-1")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert schema_differences(engine) == []


def test_migrations_on_sqlite(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        walk_up_and_down(engine)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrations_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        walk_up_and_down(engine)
    finally:
        engine.dispose()
