"""Each test writes a row and sees only its own: the fixtures empty or roll back between tests."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

ROUNDS = range(4)


def test_each_worker_has_its_own_database(testdb_worker_id: str) -> None:
    if testdb_worker_id != "master":
        assert os.environ["DATABASE_URL"].rsplit("/", 1)[1].endswith(f"_{testdb_worker_id}")


@pytest.mark.parametrize("round_", ROUNDS)
def test_session_is_emptied_between_tests(testdb_session: Session, round_: int) -> None:
    assert testdb_session.execute(text("SELECT count(*) FROM note")).scalar_one() == 0
    testdb_session.execute(text("INSERT INTO note (body) VALUES (:b)"), {"b": f"cleaned {round_}"})
    testdb_session.commit()


@pytest.mark.parametrize("round_", ROUNDS)
def test_isolated_session_is_rolled_back(testdb_isolated_session: Session, round_: int) -> None:
    assert testdb_isolated_session.execute(text("SELECT count(*) FROM note")).scalar_one() == 0
    testdb_isolated_session.execute(text("INSERT INTO note (body) VALUES (:b)"), {"b": f"isolated {round_}"})
    testdb_isolated_session.commit()  # releases a SAVEPOINT only
