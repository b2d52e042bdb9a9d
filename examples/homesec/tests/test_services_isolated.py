"""Service layer on testdb_isolated_session: the services call commit(), yet nothing
outlives the test, so fixed ids can be reused freely and no cleanup is needed."""

import pytest
from homesec import services
from homesec.errors import DuplicateCameraError
from homesec.models import Alert, AlertStatus, Camera, Event
from homesec.services import DetectionIn
from sqlalchemy import func, select, text


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_the_same_camera_id_in_every_test(testdb_isolated_session, attempt):
    # Would raise DuplicateCameraError on the 2nd attempt if the 1st had really been committed.
    services.create_camera(
        testdb_isolated_session,
        camera_id="front_door",
        name=f"Front #{attempt}",
        folder_path="/srv/front",
    )
    assert testdb_isolated_session.get(Camera, "front_door").name == f"Front #{attempt}"


def test_committed_work_is_visible_in_the_session(testdb_isolated_session):
    services.create_camera(testdb_isolated_session, camera_id="hall", name="Hall", folder_path="/srv/h")
    services.record_event(testdb_isolated_session, camera_id="hall", risk_score=42)
    testdb_isolated_session.expire_all()
    assert testdb_isolated_session.scalar(select(func.count(Event.id))) == 1


def test_committed_work_is_invisible_to_other_connections(
    testdb_isolated_session, testdb_engine, testdb_unique_id
):
    camera_id = testdb_unique_id("cam")
    services.create_camera(
        testdb_isolated_session, camera_id=camera_id, name="Attic", folder_path=f"/srv/{camera_id}"
    )
    with testdb_engine.connect() as other:
        seen = other.scalar(text("SELECT count(*) FROM cameras WHERE id = :id"), {"id": camera_id})
    assert seen == 0


def test_a_failed_unit_of_work_does_not_poison_the_test_transaction(testdb_isolated_session):
    services.create_camera(testdb_isolated_session, camera_id="hall", name="Hall", folder_path="/srv/h")
    with pytest.raises(DuplicateCameraError):
        services.create_camera(testdb_isolated_session, camera_id="hall2", name="Hall", folder_path="/srv/h")
    # the service rolled back only its own work: the first camera is still there
    services.record_event(testdb_isolated_session, camera_id="hall", risk_score=10)
    assert [c.id for c in testdb_isolated_session.scalars(select(Camera))] == ["hall"]


def test_alert_lifecycle(testdb_isolated_session):
    session = testdb_isolated_session
    services.create_camera(session, camera_id="gate", name="Gate", folder_path="/srv/gate")
    services.create_rule(session, name="person at gate", object_type="person", min_confidence=0.8)
    event = services.record_event(
        session, camera_id="gate", risk_score=75, detections=[DetectionIn("person", 0.85)]
    )
    (alert,) = event.alerts
    assert services.acknowledge_alert(session, alert.id, "frank").status is AlertStatus.ACKNOWLEDGED
    assert services.resolve_alert(session, alert.id, "frank").status is AlertStatus.RESOLVED
    assert session.scalar(select(func.count(Alert.id)).where(Alert.status == AlertStatus.OPEN)) == 0


@pytest.mark.parametrize("n_cameras", [1, 2, 4])
def test_stats_are_per_camera(testdb_isolated_session, n_cameras):
    session = testdb_isolated_session
    for i in range(n_cameras):
        services.create_camera(session, camera_id=f"cam{i}", name=f"Cam {i}", folder_path=f"/srv/{i}")
        for score in range(i + 1):
            services.record_event(session, camera_id=f"cam{i}", risk_score=score * 10)
    counts = [services.camera_stats(session, f"cam{i}").event_count for i in range(n_cameras)]
    assert counts == list(range(1, n_cameras + 1))
