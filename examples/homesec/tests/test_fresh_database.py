"""Tests that need a database of their own: commits through several connections, row locks, DDL.

Savepoint isolation cannot hold two connections' commits, and cleaning cannot undo DDL; the
``testdb_fresh_*`` fixtures hand each of these tests a database cloned from the template
ahead of time (a queue pop, no waiting on CREATE DATABASE), dropped in the background after.
"""

import factories
import pytest
from homesec import db
from homesec.models import Camera
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session


@pytest.fixture
def yard(testdb_fresh_engine):
    with Session(testdb_fresh_engine) as session:
        session.add(factories.camera("yard", name="Yard"))
        session.commit()
    return testdb_fresh_engine


def test_a_second_writer_waits_for_the_first_writers_row_lock(yard):
    with yard.connect() as first, yard.connect() as second:
        first.execute(text("UPDATE cameras SET name = 'first' WHERE id = 'yard'"))  # holds the row lock
        second.execute(text("SET lock_timeout = '100ms'"))
        with pytest.raises(OperationalError, match="lock timeout"):
            second.execute(text("UPDATE cameras SET name = 'second' WHERE id = 'yard'"))
        second.rollback()
        first.commit()
        second.execute(text("UPDATE cameras SET name = 'second' WHERE id = 'yard'"))
        second.commit()
    with yard.connect() as check:
        assert check.scalar(text("SELECT name FROM cameras WHERE id = 'yard'")) == "second"


def test_skip_locked_hands_each_worker_a_different_camera(testdb_fresh_engine):
    with Session(testdb_fresh_engine) as session:
        session.add_all([factories.camera("a"), factories.camera("b")])
        session.commit()
    claim = select(Camera.id).order_by(Camera.id).limit(1).with_for_update(skip_locked=True)
    with Session(testdb_fresh_engine) as one, Session(testdb_fresh_engine) as two:
        assert one.scalar(claim) == "a"
        assert two.scalar(claim) == "b"  # "a" is locked by the first session


def test_a_committed_schema_change_stays_in_this_tests_database(testdb_fresh_engine):
    with testdb_fresh_engine.begin() as conn:
        conn.execute(text("ALTER TABLE cameras ADD COLUMN firmware text"))
    columns = {c["name"] for c in inspect(testdb_fresh_engine).get_columns("cameras")}
    assert "firmware" in columns


def test_the_next_fresh_database_has_the_template_schema(testdb_fresh_engine):
    columns = {c["name"] for c in inspect(testdb_fresh_engine).get_columns("cameras")}
    assert "firmware" not in columns


def test_the_apps_own_unit_of_work_commits_to_the_fresh_database(testdb_fresh_env, testdb_fresh_engine):
    try:
        with db.get_session() as session:  # the app's engine, built from DATABASE_URL
            session.add(factories.camera("porch"))
    finally:
        db.dispose_sync_engines()
    with Session(testdb_fresh_engine) as check:
        assert check.get(Camera, "porch") is not None
