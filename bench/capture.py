"""The SELECTs a block of code sends, as the store sends them (SQL and parameters): what
``bench/scale.py --plans`` explains and tests/unit/test_query_plans.py checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa


@contextmanager
def captured_selects(engine: sa.engine.Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs sent through ``engine`` inside the block, in order."""
    statements: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            statements.append((sql, params))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
