"""A claim when no connection to the database can be opened at all: a DatabaseError in one
line, like every other database failure, never the driver's own exception."""

from __future__ import annotations

import pytest

from linkpool import DatabaseError, LinkPool, PoolSettings
from linkpool.db import create_engine
from tests.acceptance.harness import free_port
from tests.conftest import SURVEY_ID


def test_a_claim_with_the_database_unreachable_is_a_database_error() -> None:
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    pools = [PoolSettings(name="nps", survey_id=SURVEY_ID)]
    with LinkPool(engine=engine, pools=pools, check_schema=False) as lp:
        for _ in range(2):  # the second has no pooled connection to fail on either
            with pytest.raises(DatabaseError) as raised:
                lp.claim("nps", recipient="r")
            assert "\n" not in str(raised.value)
            assert "check [database] url and that the database is up" in str(raised.value)
