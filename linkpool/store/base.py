"""What every part of the store shares: the engine and its two kinds of transaction."""

from __future__ import annotations

from contextlib import AbstractContextManager

from sqlalchemy.engine import Connection, Engine

from linkpool.db import read_transaction, write_transaction


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def write(self) -> AbstractContextManager[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        return write_transaction(self.engine)

    def read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self.engine)


__all__: list[str] = []  # internal: see linkpool.store.Store
