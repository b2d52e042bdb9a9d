"""The async (asyncpg) read side on testdb_async_session / testdb_async_isolated_session."""

import factories
import pytest
from homesec import repository
from homesec.errors import CameraNotFoundError, DuplicateCameraError, EventNotFoundError
from homesec.models import Alert, AlertSeverity, AlertStatus, CameraStatus, Zone
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError


async def seed_events(session, camera_id, scores):
    session.add_all(
        factories.event(camera_id, s, minutes=i, detections=(("person", 0.9),)) for i, s in enumerate(scores)
    )
    await session.commit()


async def test_add_and_get_camera(testdb_async_session):
    await repository.add_camera(testdb_async_session, "porch", "Porch", "/srv/porch")
    testdb_async_session.expunge_all()
    camera = await repository.get_camera(testdb_async_session, "porch")
    assert (camera.name, camera.status) == ("Porch", CameraStatus.ONLINE)


async def test_missing_camera(testdb_async_session):
    assert await repository.get_camera(testdb_async_session, "nope") is None
    with pytest.raises(CameraNotFoundError):
        await repository.require_camera(testdb_async_session, "nope")


async def test_add_camera_conflict(testdb_async_session):
    await repository.add_camera(testdb_async_session, "porch", "Porch", "/srv/porch")
    with pytest.raises(DuplicateCameraError):
        await repository.add_camera(testdb_async_session, "porch2", "Porch 2", "/srv/porch")
    assert len(await repository.list_cameras(testdb_async_session)) == 1


async def test_list_cameras_by_name_and_status(testdb_async_session):
    testdb_async_session.add_all(
        [
            factories.camera("c1", "Garage"),
            factories.camera("c2", "Attic", status=CameraStatus.OFFLINE),
            factories.camera("c3", "Basement"),
        ]
    )
    await testdb_async_session.commit()
    assert [c.name for c in await repository.list_cameras(testdb_async_session)] == [
        "Attic",
        "Basement",
        "Garage",
    ]
    offline = await repository.list_cameras(testdb_async_session, CameraStatus.OFFLINE)
    assert [c.id for c in offline] == ["c2"]


@pytest.mark.parametrize(("limit", "expected"), [(1, [50]), (2, [50, 40]), (10, [50, 40, 30, 20, 10])])
async def test_recent_events_newest_first(testdb_async_session, limit, expected):
    testdb_async_session.add(factories.camera("yard"))
    await seed_events(testdb_async_session, "yard", [10, 20, 30, 40, 50])
    events = await repository.list_recent_events(testdb_async_session, "yard", limit)
    assert [e.risk_score for e in events] == expected


async def test_recent_events_come_with_their_detections(testdb_async_session):
    testdb_async_session.add(factories.camera("yard"))
    await seed_events(testdb_async_session, "yard", [60, 70])
    testdb_async_session.expunge_all()
    events = await repository.list_recent_events(testdb_async_session, "yard")
    # no lazy load under asyncio: this would raise MissingGreenlet if not eagerly loaded
    assert [[d.object_type for d in e.detections] for e in events] == [["person"], ["person"]]


async def test_mark_event_reviewed(testdb_async_session):
    testdb_async_session.add(factories.camera("yard"))
    await seed_events(testdb_async_session, "yard", [10, 20])
    newest, _ = await repository.list_recent_events(testdb_async_session, "yard")
    reviewed = await repository.mark_event_reviewed(testdb_async_session, newest.id)
    assert reviewed.reviewed is True
    unreviewed = await repository.list_recent_events(testdb_async_session, "yard", unreviewed_only=True)
    assert [e.risk_score for e in unreviewed] == [10]


async def test_mark_unknown_event_reviewed(testdb_async_session):
    with pytest.raises(EventNotFoundError):
        await repository.mark_event_reviewed(testdb_async_session, 31337)


async def test_alerts_by_status_and_camera(testdb_async_session):
    testdb_async_session.add_all([factories.camera("yard"), factories.camera("porch")])
    yard_event, porch_event = factories.event("yard", 90), factories.event("porch", 90)
    yard_event.alerts = [
        Alert(severity=AlertSeverity.CRITICAL, message="yard open"),
        Alert(severity=AlertSeverity.INFO, status=AlertStatus.RESOLVED, message="yard old"),
    ]
    porch_event.alerts = [Alert(severity=AlertSeverity.WARNING, message="porch open")]
    testdb_async_session.add_all([yard_event, porch_event])
    await testdb_async_session.commit()

    open_alerts = await repository.list_alerts(testdb_async_session, AlertStatus.OPEN)
    assert sorted(a.message for a in open_alerts) == ["porch open", "yard open"]
    yard_alerts = await repository.list_alerts(testdb_async_session, camera_id="yard")
    assert sorted(a.message for a in yard_alerts) == ["yard old", "yard open"]
    assert await repository.count_open_alerts(testdb_async_session) == 2


async def test_camera_stats(testdb_async_session):
    testdb_async_session.add(factories.camera("yard"))
    await seed_events(testdb_async_session, "yard", [5, 25, 65, 66])
    stats = await repository.camera_stats(testdb_async_session, "yard")
    assert (stats.event_count, stats.max_risk_score) == (4, 66)
    assert stats.events_by_level == {"low": 2, "medium": 0, "high": 2, "critical": 0}


async def test_camera_stats_unknown_camera(testdb_async_session):
    with pytest.raises(CameraNotFoundError):
        await repository.camera_stats(testdb_async_session, "ghost")


async def test_foreign_keys_hold_under_asyncpg(testdb_async_session):
    testdb_async_session.add(factories.event("ghost", 10))
    with pytest.raises(IntegrityError, match="foreign key"):
        await testdb_async_session.commit()


async def test_camera_delete_cascades_to_zones_under_asyncpg(testdb_async_session):
    cam = factories.camera("yard")
    cam.zones = [Zone(name="gate"), Zone(name="lawn")]
    testdb_async_session.add(cam)
    await testdb_async_session.commit()
    await testdb_async_session.execute(text("DELETE FROM cameras WHERE id = 'yard'"))
    await testdb_async_session.commit()
    assert await testdb_async_session.scalar(select(func.count(Zone.id))) == 0


@pytest.mark.parametrize("attempt", [1, 2])
async def test_isolated_async_session_reuses_fixed_ids(testdb_async_isolated_session, attempt):
    await repository.add_camera(testdb_async_isolated_session, "front_door", f"Front {attempt}", "/srv/front")
    cameras = await repository.list_cameras(testdb_async_isolated_session)
    assert [(c.id, c.name) for c in cameras] == [("front_door", f"Front {attempt}")]


async def test_isolated_async_commit_is_invisible_elsewhere(
    testdb_async_isolated_session, testdb_async_engine, testdb_unique_id
):
    camera_id = testdb_unique_id("cam")
    await repository.add_camera(testdb_async_isolated_session, camera_id, "Shed", f"/srv/{camera_id}")
    async with testdb_async_engine.connect() as other:
        seen = await other.scalar(text("SELECT count(*) FROM cameras WHERE id = :id"), {"id": camera_id})
    assert seen == 0


async def test_isolated_async_bulk_delete(testdb_async_isolated_session):
    session = testdb_async_isolated_session
    session.add(factories.camera("yard"))
    await seed_events(session, "yard", [10, 90, 95])
    await session.execute(delete(factories.Event).where(factories.Event.risk_score < 50))
    await session.commit()
    remaining = await repository.list_recent_events(session, "yard")
    assert [e.risk_score for e in remaining] == [95, 90]
