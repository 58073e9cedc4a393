"""Alembic environment: runs on the engine linkpool hands over, or on LINKPOOL_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context

from linkpool.db import create_engine
from linkpool.models import metadata

config = context.config


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = os.environ.get("LINKPOOL_DATABASE_URL", "sqlite:///linkpool.db")
        engine = create_engine(url)
    with engine.connect() as connection:
        connection = connection.execution_options(linkpool_immediate=True)
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("linkpool migrations run online only: use `linkpool db upgrade`")
run_migrations()
