"""What every part of the store shares: the engine and its two kinds of transaction."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Self

from sqlalchemy.engine import Connection, Engine

from linkpool.db import read_transaction, write_transaction
from linkpool.store.fencing import LeaseFence, verify_fences


class StoreBase:
    def __init__(self, engine: Engine, *, fences: tuple[LeaseFence, ...] = ()) -> None:
        self.engine = engine
        self.fences = fences
        self._postgres = engine.dialect.name == "postgresql"

    def fenced(self, *fences: LeaseFence) -> Self:
        """A view of this store (same engine, a shallow copy) whose every write transaction
        first checks ``fences`` (see ``linkpool.store.fencing``): what a lease holder writes
        through."""
        view = copy.copy(self)
        view.fences = (*self.fences, *fences)
        return view

    def unfenced(self) -> Self:
        if not self.fences:
            return self
        view = copy.copy(self)
        view.fences = ()
        return view

    def write(self) -> AbstractContextManager[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), fenced if this store is."""
        if not self.fences:
            return write_transaction(self.engine)
        return self._fenced_write()

    @contextmanager
    def _fenced_write(self) -> Iterator[Connection]:
        with write_transaction(self.engine) as connection:
            verify_fences(connection, self.fences)
            yield connection

    def read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self.engine)


__all__: list[str] = []  # internal: see linkpool.store.Store
