"""Models, constraints and foreign keys on a real PostgreSQL (tables emptied after each test)."""

import factories
import pytest
from homesec.models import (
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    AuditLog,
    Camera,
    CameraStatus,
    Detection,
    Event,
    RiskLevel,
    Zone,
)
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_camera_defaults(testdb_session):
    testdb_session.add(Camera(id="front_door", name="Front door", folder_path="/srv/front"))
    testdb_session.commit()
    camera = testdb_session.get(Camera, "front_door")
    assert camera.status is CameraStatus.ONLINE
    assert camera.created_at is not None and camera.created_at.tzinfo is not None


def test_duplicate_camera_id_is_rejected(testdb_session):
    testdb_session.add(factories.camera("garage"))
    testdb_session.commit()
    testdb_session.add(factories.camera("garage", folder_path="/srv/other"))
    with pytest.raises(IntegrityError):
        testdb_session.commit()


def test_folder_path_is_unique(testdb_session):
    testdb_session.add_all(
        [
            factories.camera("a", folder_path="/srv/shared"),
            factories.camera("b", folder_path="/srv/shared"),
        ]
    )
    with pytest.raises(IntegrityError, match="folder_path"):
        testdb_session.commit()


def test_zone_names_are_unique_per_camera_only(testdb_session):
    testdb_session.add_all([factories.camera("yard"), factories.camera("porch")])
    testdb_session.add_all([Zone(camera_id="yard", name="gate"), Zone(camera_id="porch", name="gate")])
    testdb_session.commit()
    testdb_session.add(Zone(camera_id="yard", name="gate"))
    with pytest.raises(IntegrityError):
        testdb_session.commit()


def test_zone_requires_an_existing_camera(testdb_session):
    testdb_session.add(Zone(camera_id="no_such_camera", name="gate"))
    with pytest.raises(IntegrityError, match="foreign key"):
        testdb_session.commit()


def test_deleting_a_camera_cascades_to_its_zones_in_the_database(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.add_all([Zone(camera_id="yard", name=n) for n in ("gate", "lawn", "shed")])
    testdb_session.commit()
    testdb_session.execute(delete(Camera).where(Camera.id == "yard"))  # plain SQL, no ORM cascade
    testdb_session.commit()
    assert count(testdb_session, Zone) == 0


def test_orm_delete_of_a_camera_removes_its_zones(testdb_session):
    cam = factories.camera("yard")
    cam.zones = [Zone(name="gate"), Zone(name="lawn")]
    testdb_session.add(cam)
    testdb_session.commit()
    testdb_session.delete(cam)
    testdb_session.commit()
    assert count(testdb_session, Zone) == 0


def test_a_camera_with_events_cannot_be_deleted(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.add(factories.event("yard", 40))
    testdb_session.commit()
    with pytest.raises(IntegrityError, match="foreign key"):
        testdb_session.execute(delete(Camera).where(Camera.id == "yard"))
    testdb_session.rollback()
    assert testdb_session.get(Camera, "yard") is not None


def test_deleting_an_event_cascades_to_detections_and_alerts(testdb_session):
    testdb_session.add(factories.camera("yard"))
    ev = factories.event("yard", 90, detections=(("person", 0.9), ("dog", 0.4)))
    ev.alerts = [Alert(severity=AlertSeverity.CRITICAL, message="intruder")]
    testdb_session.add(ev)
    testdb_session.commit()
    assert (count(testdb_session, Detection), count(testdb_session, Alert)) == (2, 1)
    testdb_session.execute(delete(Event))
    testdb_session.commit()
    assert (count(testdb_session, Detection), count(testdb_session, Alert)) == (0, 0)


def test_deleting_a_zone_keeps_its_events_without_a_zone(testdb_session):
    testdb_session.add(factories.camera("yard"))
    zone = Zone(camera_id="yard", name="gate")
    testdb_session.add(zone)
    testdb_session.flush()
    ev = factories.event("yard", 20, zone_id=zone.id)
    testdb_session.add(ev)
    testdb_session.commit()
    testdb_session.execute(delete(Zone))
    testdb_session.commit()
    testdb_session.refresh(ev)
    assert ev.zone_id is None


def test_deleting_a_rule_keeps_its_alerts(testdb_session):
    testdb_session.add(factories.camera("yard"))
    rule = AlertRule(name="night intruder")
    ev = factories.event("yard", 70)
    testdb_session.add_all([rule, ev])
    testdb_session.flush()
    alert = Alert(event_id=ev.id, rule_id=rule.id, severity=AlertSeverity.WARNING)
    testdb_session.add(alert)
    testdb_session.commit()
    testdb_session.execute(delete(AlertRule))
    testdb_session.commit()
    testdb_session.refresh(alert)
    assert alert.rule_id is None
    assert alert.status is AlertStatus.OPEN


def test_one_alert_per_event_and_rule(testdb_session):
    testdb_session.add(factories.camera("yard"))
    rule = AlertRule(name="any")
    ev = factories.event("yard", 70)
    testdb_session.add_all([rule, ev])
    testdb_session.flush()
    testdb_session.add_all(
        [Alert(event_id=ev.id, rule_id=rule.id, severity=AlertSeverity.INFO) for _ in range(2)]
    )
    with pytest.raises(IntegrityError):
        testdb_session.commit()


def test_event_ids_come_from_an_identity_column(testdb_session):
    testdb_session.add(factories.camera("yard"))
    events = [factories.event("yard", s, minutes=i) for i, s in enumerate((5, 50, 95))]
    testdb_session.add_all(events)
    testdb_session.commit()
    ids = [e.id for e in events]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_events_are_not_reviewed_by_default(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.commit()
    testdb_session.execute(
        Event.__table__.insert().values(
            camera_id="yard", started_at=factories.T0, risk_score=1, risk_level="low"
        )
    )
    testdb_session.commit()
    assert testdb_session.scalars(select(Event.reviewed)).one() is False


@pytest.mark.parametrize("score", [-1, 101, 250])
def test_risk_score_outside_0_100_is_rejected(testdb_session, score):
    testdb_session.add(factories.camera("yard"))
    testdb_session.commit()
    insert = Event.__table__.insert().values(
        camera_id="yard", started_at=factories.T0, risk_score=score, risk_level="low"
    )
    with pytest.raises(IntegrityError, match="event_risk_score_range"):
        testdb_session.execute(insert)


@pytest.mark.parametrize("confidence", [-0.01, 1.01, 7.0])
def test_detection_confidence_outside_0_1_is_rejected(testdb_session, confidence):
    testdb_session.add(factories.camera("yard"))
    testdb_session.add(factories.event("yard", 10, detections=(("cat", confidence),)))
    with pytest.raises(IntegrityError, match="detection_confidence_range"):
        testdb_session.commit()


def test_risk_level_is_stored_as_a_postgres_enum(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.add(factories.event("yard", 99))
    testdb_session.commit()
    stored = testdb_session.scalar(select(Event.risk_level))
    assert stored is RiskLevel.CRITICAL


def test_audit_log_details_are_queryable_jsonb(testdb_session):
    testdb_session.add_all(
        [
            AuditLog(
                action="camera.status",
                entity_type="camera",
                entity_id="a",
                details={"new": "offline"},
            ),
            AuditLog(
                action="camera.status",
                entity_type="camera",
                entity_id="b",
                details={"new": "online"},
            ),
        ]
    )
    testdb_session.commit()
    offline = testdb_session.scalars(
        select(AuditLog.entity_id).where(AuditLog.details["new"].astext == "offline")
    ).all()
    assert offline == ["a"]


def test_audit_log_survives_deleting_what_it_mentions(testdb_session):
    testdb_session.add(factories.camera("yard"))
    testdb_session.add(AuditLog(action="camera.created", entity_type="camera", entity_id="yard"))
    testdb_session.commit()
    testdb_session.execute(delete(Camera))
    testdb_session.commit()
    assert count(testdb_session, AuditLog) == 1
