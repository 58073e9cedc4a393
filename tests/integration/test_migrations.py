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


def insert_two_deleted_lists_and_a_ready_one(connection: sa.Connection, now: str) -> None:
    """Lists 1 and 2 deleted, 3 ready, of pool nps, as the columns of every revision hold them."""
    for list_id, state in ((1, "deleted"), (2, "deleted"), (3, "ready")):
        connection.execute(
            sa.text(
                "INSERT INTO lists (id, pool, survey_id, name, state, size, created_at,"
                " updated_at) VALUES (:id, 'nps', 'SV_1', :name, :state, 3, :now, :now)"
            ),
            {"id": list_id, "name": f"linkpool/nps/{list_id}", "state": state, "now": now},
        )


def backfill_closed_totals(engine: sa.engine.Engine) -> list[tuple[str, int, int, int]]:
    """Lists deleted before 0005 get their figures summed into closed_list_totals."""
    downgrade(engine, "base")
    upgrade(engine, "0001")
    now = "2026-11-01 00:00:00"
    with engine.begin() as connection:
        insert_two_deleted_lists_and_a_ready_one(connection, now)
        statuses = {1: ["claimed", "claimed", "void"], 2: ["void"], 3: ["claimed", "available"]}
        for list_id, states in statuses.items():
            for n, status in enumerate(states):
                connection.execute(
                    sa.text(
                        "INSERT INTO links (list_id, pool, ext_ref, contact_id, url, expires_at,"
                        " status) VALUES (:list_id, 'nps', :ref, 'CID_1', :ref, :now, :status)"
                    ),
                    {"list_id": list_id, "ref": f"{list_id}#{n}", "now": now, "status": status},
                )
    upgrade(engine)
    with engine.connect() as connection:
        query = "SELECT pool, lists, claimed, void FROM closed_list_totals"
        rows = [tuple(row) for row in connection.execute(sa.text(query))]
    downgrade(engine, "base")
    upgrade(engine)
    return rows


def test_0005_backfills_the_closed_list_totals_on_sqlite(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        assert backfill_closed_totals(engine) == [("nps", 2, 2, 2)]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_0005_backfills_the_closed_list_totals_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        assert backfill_closed_totals(engine) == [("nps", 2, 2, 2)]
    finally:
        engine.dispose()


def backfill_closed_answers(engine: sa.engine.Engine) -> list[tuple[str, int, int, int, int]]:
    """Lists deleted before 0007 get their answered and finished claims added to their pool's
    closed_list_totals row (0005 and gc left the rest); live lists' answers stay out."""
    downgrade(engine, "base")
    upgrade(engine, "0006")
    now = "2026-11-01 00:00:00"
    answered = {  # list id -> (response id, finished) of its claims
        1: [("R_1", True), ("R_2", False), (None, None)],
        2: [("R_3", True)],
        3: [("R_4", True)],
    }
    with engine.begin() as connection:
        insert_two_deleted_lists_and_a_ready_one(connection, now)
        for list_id, responses in answered.items():
            for n, (response_id, finished) in enumerate(responses):
                connection.execute(
                    sa.text(
                        "INSERT INTO links (list_id, pool, ext_ref, contact_id, url, expires_at,"
                        " status, response_id, response_finished) VALUES (:list_id, 'nps', :ref,"
                        " 'CID_1', :ref, :now, 'claimed', :response_id, :finished)"
                    ),
                    {
                        "list_id": list_id,
                        "ref": f"{list_id}#{n}",
                        "now": now,
                        "response_id": response_id,
                        "finished": finished,
                    },
                )
        connection.execute(
            sa.text(
                "INSERT INTO closed_list_totals (pool, lists, claimed, void)"
                " VALUES ('nps', 2, 4, 0), ('other', 1, 0, 3)"
            )
        )
    upgrade(engine)
    with engine.connect() as connection:
        query = (
            "SELECT pool, lists, claimed, answered, finished FROM closed_list_totals ORDER BY pool"
        )
        rows = [tuple(row) for row in connection.execute(sa.text(query))]
    downgrade(engine, "base")
    upgrade(engine)
    return rows


BACKFILLED_ANSWERS = [("nps", 2, 4, 3, 2), ("other", 1, 0, 0, 0)]


def test_0007_backfills_the_closed_answers_on_sqlite(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        assert backfill_closed_answers(engine) == BACKFILLED_ANSWERS
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_0007_backfills_the_closed_answers_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        assert backfill_closed_answers(engine) == BACKFILLED_ANSWERS
    finally:
        engine.dispose()
