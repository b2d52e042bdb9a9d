"""Transactions and cleanup: rollbacks, savepoints, the app's unit of work, testdb_clean."""

import factories
import pytest
from homesec import db
from homesec.models import Camera, Event, Zone
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_rollback_discards_uncommitted_work(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.flush()
    assert count(testdb_session, Camera) == 1
    testdb_session.rollback()
    assert count(testdb_session, Camera) == 0


def test_savepoint_rollback_keeps_the_outer_work(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.flush()
    with pytest.raises(IntegrityError), testdb_session.begin_nested():
        testdb_session.add(Zone(camera_id="missing", name="gate"))
    testdb_session.commit()
    assert count(testdb_session, Camera) == 1
    assert count(testdb_session, Zone) == 0


def test_session_is_usable_after_a_failed_flush_and_rollback(testdb_session):
    testdb_session.add(factories.event("no_camera", 10))
    with pytest.raises(IntegrityError):
        testdb_session.flush()
    testdb_session.rollback()
    testdb_session.add(factories.camera("yard"))
    testdb_session.commit()
    assert count(testdb_session, Camera) == 1


def test_other_connections_see_only_committed_rows(testdb_session, testdb_engine):
    testdb_session.add(factories.camera("yard"))
    testdb_session.flush()
    with testdb_engine.connect() as other:
        assert other.scalar(text("SELECT count(*) FROM cameras")) == 0
    testdb_session.commit()
    with testdb_engine.connect() as other:
        assert other.scalar(text("SELECT count(*) FROM cameras")) == 1


def test_app_unit_of_work_commits(app_db, testdb_session):
    with db.get_session() as session:
        session.add(factories.camera("yard"))
    assert testdb_session.get(Camera, "yard") is not None


def test_app_unit_of_work_rolls_back_on_error(app_db, testdb_session):
    with pytest.raises(RuntimeError), db.get_session() as session:
        session.add(factories.camera("yard"))
        session.flush()
        raise RuntimeError("camera folder not mounted")
    assert count(testdb_session, Camera) == 0


async def test_async_unit_of_work_commits(testdb_env, testdb_async_session):
    try:
        async with db.get_async_session() as session:
            session.add(factories.camera("yard"))
        assert await testdb_async_session.get(Camera, "yard") is not None
    finally:
        await db.dispose_engines()


def test_clean_empties_every_table_now(testdb_engine, testdb_clean):
    # Raw SQL relying on server-side defaults, as a migration or a psql session would.
    with testdb_engine.begin() as conn:
        conn.execute(text("INSERT INTO cameras (id, name, folder_path) VALUES ('x', 'X', '/x')"))
        conn.execute(
            text(
                "INSERT INTO events (camera_id, started_at, risk_score, risk_level) "
                "VALUES ('x', now(), 1, 'low')"
            )
        )
        conn.execute(text("INSERT INTO audit_log (action, entity_type, entity_id) VALUES ('a', 'cam', 'x')"))
    testdb_clean()
    with testdb_engine.connect() as conn:
        for table in ("cameras", "events", "audit_log"):
            assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0


def test_tables_start_empty(testdb_session):
    # Earlier tests on this worker committed rows; testdb_session emptied the tables after them.
    for model in (Camera, Event, Zone):
        assert count(testdb_session, model) == 0
