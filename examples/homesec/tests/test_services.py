"""Service layer on testdb_session: services commit for real; tables are emptied afterwards."""

from datetime import timedelta

import factories
import pytest
from homesec import services
from homesec.errors import (
    AlertNotFoundError,
    AlertStateError,
    CameraInUseError,
    CameraNotFoundError,
    DuplicateCameraError,
    DuplicateRuleError,
    EventNotFoundError,
    InvalidEventError,
    InvalidZoneError,
)
from homesec.models import (
    Alert,
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
from homesec.services import DetectionIn
from sqlalchemy import func, select

T0 = factories.T0


def count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def yard(testdb_session):
    return services.create_camera(
        testdb_session, camera_id="yard", name="Back yard", folder_path="/srv/nvr/yard"
    )


def test_create_camera_persists_and_audits(testdb_session):
    services.create_camera(
        testdb_session, camera_id="porch", name="Porch", folder_path="/srv/porch", actor="alice"
    )
    testdb_session.expunge_all()
    assert testdb_session.get(Camera, "porch").name == "Porch"
    entry = testdb_session.scalars(select(AuditLog)).one()
    assert (entry.action, entry.entity_id, entry.actor) == ("camera.created", "porch", "alice")
    assert entry.details == {"folder_path": "/srv/porch"}


def test_create_camera_twice_is_a_conflict(testdb_session, yard):
    with pytest.raises(DuplicateCameraError, match="already exists"):
        services.create_camera(testdb_session, camera_id="yard", name="Again", folder_path="/srv/x")


def test_reusing_a_folder_is_a_conflict_and_the_session_stays_usable(testdb_session, yard):
    with pytest.raises(DuplicateCameraError, match="folder"):
        services.create_camera(testdb_session, camera_id="yard2", name="Yard 2", folder_path="/srv/nvr/yard")
    services.create_camera(testdb_session, camera_id="yard2", name="Yard 2", folder_path="/srv/y2")
    assert count(testdb_session, Camera) == 2
    assert count(testdb_session, AuditLog) == 2  # the failed attempt left no audit entry


def test_set_camera_status_records_old_and_new(testdb_session, yard):
    services.set_camera_status(testdb_session, "yard", CameraStatus.MAINTENANCE, actor="bob")
    entry = testdb_session.scalars(select(AuditLog).where(AuditLog.action == "camera.status")).one()
    assert entry.details == {"old": "online", "new": "maintenance"}
    assert testdb_session.get(Camera, "yard").status is CameraStatus.MAINTENANCE


def test_unknown_camera_is_not_found(testdb_session):
    with pytest.raises(CameraNotFoundError, match="nowhere"):
        services.set_camera_status(testdb_session, "nowhere", CameraStatus.OFFLINE)


def test_add_zone(testdb_session, yard):
    zone = services.add_zone(testdb_session, "yard", "driveway", sensitivity=8)
    assert zone.id is not None
    assert [z.name for z in testdb_session.get(Camera, "yard").zones] == ["driveway"]


@pytest.mark.parametrize("sensitivity", [0, 11])
def test_zone_sensitivity_is_checked_by_the_database(testdb_session, yard, sensitivity):
    with pytest.raises(InvalidZoneError):
        services.add_zone(testdb_session, "yard", "gate", sensitivity=sensitivity)
    assert count(testdb_session, Zone) == 0


@pytest.mark.parametrize(
    ("score", "level"),
    [(5, RiskLevel.LOW), (35, RiskLevel.MEDIUM), (65, RiskLevel.HIGH), (95, RiskLevel.CRITICAL)],
)
def test_record_event_stores_the_computed_risk_level(testdb_session, yard, score, level):
    event = services.record_event(testdb_session, camera_id="yard", risk_score=score, started_at=T0)
    testdb_session.expire_all()
    assert testdb_session.get(Event, event.id).risk_level is level


def test_record_event_stores_detections(testdb_session, yard):
    event = services.record_event(
        testdb_session,
        camera_id="yard",
        risk_score=70,
        summary="person at the gate",
        detections=[DetectionIn("person", 0.93), DetectionIn("dog", 0.41)],
    )
    rows = testdb_session.execute(
        select(Detection.object_type, Detection.confidence)
        .where(Detection.event_id == event.id)
        .order_by(Detection.object_type)
    ).all()
    assert [tuple(r) for r in rows] == [("dog", 0.41), ("person", 0.93)]


def test_record_event_for_unknown_camera_writes_nothing(testdb_session):
    with pytest.raises(CameraNotFoundError):
        services.record_event(testdb_session, camera_id="ghost", risk_score=50)
    assert count(testdb_session, Event) == 0


def test_a_rejected_detection_rolls_back_the_whole_event(testdb_session, yard):
    with pytest.raises(InvalidEventError, match="rejected by the database"):
        services.record_event(
            testdb_session,
            camera_id="yard",
            risk_score=50,
            detections=[DetectionIn("person", 0.9), DetectionIn("car", 1.7)],
        )
    assert count(testdb_session, Event) == 0
    assert count(testdb_session, Detection) == 0
    assert count(testdb_session, Camera) == 1  # committed earlier, untouched


def test_event_zone_must_belong_to_the_camera(testdb_session, yard):
    services.create_camera(testdb_session, camera_id="porch", name="Porch", folder_path="/srv/p")
    porch_zone = services.add_zone(testdb_session, "porch", "steps")
    with pytest.raises(InvalidEventError, match="does not belong"):
        services.record_event(testdb_session, camera_id="yard", risk_score=10, zone_id=porch_zone.id)


def test_matching_rule_raises_an_alert(testdb_session, yard):
    rule = services.create_rule(
        testdb_session, name="intruder", object_type="person", severity=AlertSeverity.CRITICAL
    )
    event = services.record_event(
        testdb_session, camera_id="yard", risk_score=88, detections=[DetectionIn("person", 0.97)]
    )
    alert = testdb_session.scalars(select(Alert)).one()
    assert (alert.event_id, alert.rule_id) == (event.id, rule.id)
    assert alert.severity is AlertSeverity.CRITICAL and alert.status is AlertStatus.OPEN
    assert alert.message == "intruder: critical risk on Back yard"


def test_each_matching_rule_raises_its_own_alert(testdb_session, yard):
    services.create_rule(testdb_session, name="any high", min_risk_level=RiskLevel.HIGH)
    services.create_rule(testdb_session, name="yard only", camera_id="yard")
    services.create_rule(testdb_session, name="disabled", enabled=False)
    services.create_rule(testdb_session, name="critical only", min_risk_level=RiskLevel.CRITICAL)
    services.record_event(testdb_session, camera_id="yard", risk_score=70)
    messages = sorted(testdb_session.scalars(select(Alert.message)))
    assert messages == ["any high: high risk on Back yard", "yard only: high risk on Back yard"]


def test_rules_of_another_camera_do_not_fire(testdb_session, yard):
    services.create_camera(testdb_session, camera_id="porch", name="Porch", folder_path="/srv/p")
    services.create_rule(testdb_session, name="porch watch", camera_id="porch")
    services.record_event(testdb_session, camera_id="yard", risk_score=99)
    assert count(testdb_session, Alert) == 0


def test_cameras_in_maintenance_raise_no_alerts(testdb_session, yard):
    services.create_rule(testdb_session, name="everything", min_risk_level=RiskLevel.LOW)
    services.set_camera_status(testdb_session, "yard", CameraStatus.MAINTENANCE)
    services.record_event(testdb_session, camera_id="yard", risk_score=99)
    assert count(testdb_session, Event) == 1
    assert count(testdb_session, Alert) == 0


def test_rule_for_unknown_camera_is_refused(testdb_session):
    with pytest.raises(CameraNotFoundError):
        services.create_rule(testdb_session, name="ghost rule", camera_id="ghost")


def test_rule_names_are_unique(testdb_session):
    services.create_rule(testdb_session, name="night")
    with pytest.raises(DuplicateRuleError):
        services.create_rule(testdb_session, name="night")


@pytest.fixture
def open_alert(testdb_session, yard):
    services.create_rule(testdb_session, name="any high")
    event = services.record_event(testdb_session, camera_id="yard", risk_score=80)
    return testdb_session.scalars(select(Alert).where(Alert.event_id == event.id)).one()


def test_acknowledge_alert(testdb_session, open_alert):
    services.acknowledge_alert(testdb_session, open_alert.id, "carol", now=T0)
    testdb_session.expire_all()
    alert = testdb_session.get(Alert, open_alert.id)
    assert alert.status is AlertStatus.ACKNOWLEDGED
    assert (alert.acknowledged_by, alert.acknowledged_at) == ("carol", T0)
    assert count(testdb_session, AuditLog, AuditLog.action == "alert.acknowledged") == 1


def test_an_alert_is_acknowledged_only_once(testdb_session, open_alert):
    services.acknowledge_alert(testdb_session, open_alert.id, "carol")
    with pytest.raises(AlertStateError, match="only open alerts"):
        services.acknowledge_alert(testdb_session, open_alert.id, "dave")
    assert testdb_session.get(Alert, open_alert.id).acknowledged_by == "carol"


def test_resolve_after_acknowledge_then_not_again(testdb_session, open_alert):
    services.acknowledge_alert(testdb_session, open_alert.id, "carol")
    assert services.resolve_alert(testdb_session, open_alert.id, "carol").status is AlertStatus.RESOLVED
    with pytest.raises(AlertStateError, match="already resolved"):
        services.resolve_alert(testdb_session, open_alert.id, "carol")


def test_unknown_alert(testdb_session):
    with pytest.raises(AlertNotFoundError):
        services.acknowledge_alert(testdb_session, 424242, "carol")


def _events(session, camera_id, scores):
    for i, score in enumerate(scores):
        services.record_event(
            session, camera_id=camera_id, risk_score=score, started_at=T0 + timedelta(minutes=i)
        )


def test_recent_events_newest_first_and_limited(testdb_session, yard):
    _events(testdb_session, "yard", [10, 20, 30, 40, 50])
    recent = services.list_recent_events(testdb_session, "yard", limit=3)
    assert [e.risk_score for e in recent] == [50, 40, 30]


def test_recent_events_of_one_camera(testdb_session, yard):
    services.create_camera(testdb_session, camera_id="porch", name="Porch", folder_path="/srv/p")
    _events(testdb_session, "yard", [1, 2])
    _events(testdb_session, "porch", [3])
    assert {e.camera_id for e in services.list_recent_events(testdb_session, "porch")} == {"porch"}
    assert len(services.list_recent_events(testdb_session)) == 3


def test_unreviewed_filter_and_mark_reviewed(testdb_session, yard):
    _events(testdb_session, "yard", [10, 20, 30])
    newest = services.list_recent_events(testdb_session, "yard", limit=1)[0]
    services.mark_reviewed(testdb_session, newest.id, actor="erin")
    unreviewed = services.list_recent_events(testdb_session, "yard", unreviewed_only=True)
    assert [e.risk_score for e in unreviewed] == [20, 10]


def test_mark_reviewed_unknown_event(testdb_session):
    with pytest.raises(EventNotFoundError):
        services.mark_reviewed(testdb_session, 987654)


@pytest.mark.parametrize("limit", [0, services.MAX_LIST_LIMIT + 1])
def test_recent_events_limit_is_bounded(testdb_session, limit):
    with pytest.raises(ValueError, match="limit"):
        services.list_recent_events(testdb_session, limit=limit)


def test_camera_stats(testdb_session, yard):
    services.create_rule(testdb_session, name="high")
    _events(testdb_session, "yard", [10, 35, 70, 90])
    first_alert = testdb_session.scalars(select(Alert).order_by(Alert.id)).first()
    services.acknowledge_alert(testdb_session, first_alert.id, "carol")
    stats = services.camera_stats(testdb_session, "yard")
    assert stats.event_count == 4 and stats.unreviewed_count == 4
    assert stats.open_alerts == 1
    assert stats.max_risk_score == 90
    assert stats.last_event_at == T0 + timedelta(minutes=3)
    assert stats.events_by_level == {"low": 1, "medium": 1, "high": 1, "critical": 1}


def test_camera_stats_of_an_idle_camera(testdb_session, yard):
    stats = services.camera_stats(testdb_session, "yard")
    assert (stats.event_count, stats.max_risk_score, stats.last_event_at) == (0, None, None)
    assert set(stats.events_by_level.values()) == {0}


def test_delete_camera_without_events_removes_its_zones(testdb_session, yard):
    services.add_zone(testdb_session, "yard", "gate")
    services.delete_camera(testdb_session, "yard")
    assert (count(testdb_session, Camera), count(testdb_session, Zone)) == (0, 0)


def test_delete_camera_with_events_is_refused(testdb_session, yard):
    services.record_event(testdb_session, camera_id="yard", risk_score=10)
    with pytest.raises(CameraInUseError):
        services.delete_camera(testdb_session, "yard")
    assert count(testdb_session, Camera) == 1
