"""The worker database was built from homesec.db:create_schema (via testdb's template)."""

import pytest
from homesec.db import create_schema
from homesec.models import AlertSeverity, AlertStatus, Base, CameraStatus, RiskLevel
from sqlalchemy import inspect, text


def test_every_model_table_exists(testdb_engine):
    assert set(inspect(testdb_engine).get_table_names()) == set(Base.metadata.tables)


@pytest.mark.parametrize(
    ("table", "column", "target", "on_delete"),
    [
        ("zones", "camera_id", "cameras", "CASCADE"),
        ("events", "camera_id", "cameras", "RESTRICT"),
        ("events", "zone_id", "zones", "SET NULL"),
        ("detections", "event_id", "events", "CASCADE"),
        ("alerts", "event_id", "events", "CASCADE"),
        ("alerts", "rule_id", "alert_rules", "SET NULL"),
        ("alert_rules", "camera_id", "cameras", "CASCADE"),
    ],
)
def test_foreign_key_delete_rules(testdb_engine, table, column, target, on_delete):
    query = text(
        """
        SELECT ccu.table_name, rc.delete_rule
        FROM information_schema.key_column_usage kcu
        JOIN information_schema.referential_constraints rc
          ON rc.constraint_name = kcu.constraint_name
        JOIN information_schema.constraint_column_usage ccu
          ON ccu.constraint_name = kcu.constraint_name
        WHERE kcu.table_name = :table AND kcu.column_name = :column
        """
    )
    with testdb_engine.connect() as conn:
        rows = conn.execute(query, {"table": table, "column": column}).all()
    assert [tuple(r) for r in rows] == [(target, on_delete)]


def test_audit_log_has_no_foreign_keys(testdb_engine):
    assert inspect(testdb_engine).get_foreign_keys("audit_log") == []


@pytest.mark.parametrize(
    ("type_name", "enum_cls"),
    [
        ("camera_status", CameraStatus),
        ("risk_level", RiskLevel),
        ("alert_severity", AlertSeverity),
        ("alert_status", AlertStatus),
    ],
)
def test_enum_types_have_the_model_values(testdb_engine, type_name, enum_cls):
    query = text(
        "SELECT e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
        "WHERE t.typname = :name ORDER BY e.enumsortorder"
    )
    with testdb_engine.connect() as conn:
        labels = conn.scalars(query, {"name": type_name}).all()
    assert labels == [member.value for member in enum_cls]


def test_events_are_indexed_by_camera_and_time(testdb_engine):
    indexes = {i["name"]: i["column_names"] for i in inspect(testdb_engine).get_indexes("events")}
    assert indexes["ix_events_camera_started"] == ["camera_id", "started_at"]


def test_create_schema_is_idempotent(testdb_url, testdb_engine):
    create_schema(testdb_url)  # the template already holds the schema: nothing to do, no error
    assert set(inspect(testdb_engine).get_table_names()) == set(Base.metadata.tables)
