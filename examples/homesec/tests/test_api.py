"""The HTTP API end to end: FastAPI -> services / async repository -> this worker's
PostgreSQL and Redis, through the project's ``client`` fixture (see conftest.py)."""

import pytest
from sqlalchemy import make_url


@pytest.fixture
async def camera(client, testdb_unique_id):
    camera_id = testdb_unique_id("cam")
    body = {"id": camera_id, "name": "Driveway", "folder_path": f"/srv/nvr/{camera_id}"}
    response = await client.post("/cameras", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def post_event(client, camera_id, risk_score, **extra):
    response = await client.post("/events", json={"camera_id": camera_id, "risk_score": risk_score, **extra})
    assert response.status_code == 201, response.text
    return response.json()


async def test_health_reports_the_worker_database(client, testdb_url):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": make_url(testdb_url).database,
        "redis": "ok",
    }


async def test_create_and_get_camera(client, camera):
    response = await client.get(f"/cameras/{camera['id']}")
    assert response.status_code == 200
    assert response.json()["name"] == "Driveway"
    assert response.json()["status"] == "online"


async def test_get_unknown_camera_is_404(client):
    response = await client.get("/cameras/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {"detail": "camera 'does-not-exist' not found"}


async def test_duplicate_camera_is_409(client, camera):
    body = {"id": camera["id"], "name": "Again", "folder_path": "/srv/elsewhere"}
    response = await client.post("/cameras", json=body)
    assert response.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"id": "cam1", "folder_path": "/srv/x"}, id="missing-name"),
        pytest.param({"id": "has space", "name": "X", "folder_path": "/srv/x"}, id="bad-id"),
        pytest.param({"id": "../etc", "name": "X", "folder_path": "/srv/x"}, id="path-id"),
        pytest.param({"id": "cam1", "name": "X", "folder_path": ""}, id="empty-folder"),
        pytest.param({"id": "cam1", "name": "X", "folder_path": "/x", "status": "broken"}, id="bad-status"),
    ],
)
async def test_invalid_camera_is_422(client, body):
    response = await client.post("/cameras", json=body)
    assert response.status_code == 422
    assert (await client.get("/cameras")).json() == []


async def test_list_cameras_filtered_by_status(client, camera):
    await client.post(
        "/cameras",
        json={"id": "spare", "name": "Spare", "folder_path": "/srv/spare", "status": "offline"},
    )
    all_ids = {c["id"] for c in (await client.get("/cameras")).json()}
    offline_ids = [c["id"] for c in (await client.get("/cameras", params={"status": "offline"})).json()]
    assert all_ids == {camera["id"], "spare"}
    assert offline_ids == ["spare"]


async def test_change_camera_status(client, camera):
    response = await client.patch(f"/cameras/{camera['id']}", json={"status": "maintenance"})
    assert response.status_code == 200
    assert (await client.get(f"/cameras/{camera['id']}")).json()["status"] == "maintenance"


async def test_delete_camera(client, camera):
    assert (await client.delete(f"/cameras/{camera['id']}")).status_code == 204
    assert (await client.get(f"/cameras/{camera['id']}")).status_code == 404


async def test_delete_camera_with_events_is_409(client, camera):
    await post_event(client, camera["id"], 10)
    assert (await client.delete(f"/cameras/{camera['id']}")).status_code == 409


async def test_add_zone_and_use_it(client, camera):
    response = await client.post(f"/cameras/{camera['id']}/zones", json={"name": "gate", "sensitivity": 7})
    assert response.status_code == 201
    event = await post_event(client, camera["id"], 50, zone_id=response.json()["id"])
    assert event["zone_id"] == response.json()["id"]


@pytest.mark.parametrize(("score", "level"), [(0, "low"), (30, "medium"), (60, "high"), (85, "critical")])
async def test_post_event_computes_the_risk_level(client, camera, score, level):
    event = await post_event(client, camera["id"], score, summary="motion")
    assert (event["risk_score"], event["risk_level"], event["reviewed"]) == (score, level, False)


async def test_post_event_for_unknown_camera_is_404(client):
    response = await client.post("/events", json={"camera_id": "ghost", "risk_score": 10})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"risk_score": 101}, id="score-too-high"),
        pytest.param({"risk_score": -5}, id="score-negative"),
        pytest.param(
            {"risk_score": 10, "detections": [{"object_type": "cat", "confidence": 1.5}]},
            id="confidence",
        ),
    ],
)
async def test_invalid_event_is_422(client, camera, extra):
    response = await client.post("/events", json={"camera_id": camera["id"], **extra})
    assert response.status_code == 422
    assert (await client.get(f"/cameras/{camera['id']}/stats")).json()["event_count"] == 0


async def test_events_are_cached_after_the_first_read(client, camera):
    await post_event(client, camera["id"], 10, started_at="2024-06-01T12:00:00Z")
    first = await client.get("/events", params={"camera_id": camera["id"]})
    second = await client.get("/events", params={"camera_id": camera["id"]})
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert first.json() == second.json()


async def test_new_events_reach_a_warm_cache(client, camera, testdb_redis):
    await post_event(client, camera["id"], 10, started_at="2024-06-01T12:00:00Z")
    await client.get("/events", params={"camera_id": camera["id"]})  # warms the cache
    await post_event(client, camera["id"], 90, started_at="2024-06-01T12:05:00Z")
    response = await client.get("/events", params={"camera_id": camera["id"]})
    assert response.headers["X-Cache"] == "hit"
    assert [e["risk_score"] for e in response.json()] == [90, 10]
    assert testdb_redis.llen(f"homesec:camera:{camera['id']}:recent_events") == 2


async def test_reviewing_an_event_invalidates_the_cache(client, camera):
    event = await post_event(client, camera["id"], 40)
    await client.get("/events", params={"camera_id": camera["id"]})
    response = await client.post(f"/events/{event['id']}/review")
    assert response.status_code == 200 and response.json()["reviewed"] is True
    again = await client.get("/events", params={"camera_id": camera["id"]})
    assert again.headers["X-Cache"] == "miss"
    assert again.json()[0]["reviewed"] is True


async def test_events_of_an_unknown_camera_is_404(client):
    response = await client.get("/events", params={"camera_id": "ghost"})
    assert response.status_code == 404


async def test_events_across_cameras_bypass_the_cache(client, camera):
    await client.post("/cameras", json={"id": "porch", "name": "Porch", "folder_path": "/srv/porch"})
    await post_event(client, camera["id"], 10, started_at="2024-06-01T12:00:00Z")
    await post_event(
        client,
        "porch",
        20,
        started_at="2024-06-01T12:01:00Z",
        detections=[{"object_type": "person", "confidence": 0.8}],
    )
    response = await client.get("/events", params={"limit": 10})
    assert response.headers["X-Cache"] == "bypass"
    assert [(e["camera_id"], e["detections"]) for e in response.json()] == [
        ("porch", [{"object_type": "person", "confidence": 0.8}]),
        (camera["id"], []),
    ]


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_events_limit(client, camera, limit):
    for minute in range(3):
        await post_event(client, camera["id"], 10 + minute, started_at=f"2024-06-01T12:0{minute}:00Z")
    response = await client.get("/events", params={"camera_id": camera["id"], "limit": limit})
    assert [e["risk_score"] for e in response.json()] == [12, 11, 10][:limit]


async def test_rule_raises_alert_that_can_be_acknowledged(client, camera):
    rule = await client.post(
        "/alert-rules", json={"name": "person", "object_type": "person", "severity": "critical"}
    )
    assert rule.status_code == 201
    event = await post_event(
        client, camera["id"], 92, detections=[{"object_type": "person", "confidence": 0.96}]
    )
    (alert,) = event["alerts"]
    assert (alert["severity"], alert["status"], alert["rule_id"]) == (
        "critical",
        "open",
        rule.json()["id"],
    )

    open_alerts = (await client.get("/alerts", params={"status": "open"})).json()
    assert [a["id"] for a in open_alerts] == [alert["id"]]

    ack = await client.post(f"/alerts/{alert['id']}/acknowledge", json={"user": "grace"})
    assert ack.status_code == 200
    assert (ack.json()["status"], ack.json()["acknowledged_by"]) == ("acknowledged", "grace")
    assert (await client.get("/alerts", params={"status": "open"})).json() == []


async def test_acknowledging_twice_is_409(client, camera):
    await client.post("/alert-rules", json={"name": "high"})
    (alert,) = (await post_event(client, camera["id"], 70))["alerts"]
    await client.post(f"/alerts/{alert['id']}/acknowledge", json={"user": "grace"})
    again = await client.post(f"/alerts/{alert['id']}/acknowledge", json={"user": "heidi"})
    assert again.status_code == 409


async def test_acknowledging_an_unknown_alert_is_404(client):
    response = await client.post("/alerts/999999/acknowledge", json={"user": "grace"})
    assert response.status_code == 404


async def test_low_risk_events_raise_no_alert(client, camera):
    await client.post("/alert-rules", json={"name": "high"})
    assert (await post_event(client, camera["id"], 20))["alerts"] == []


async def test_duplicate_rule_name_is_409(client):
    assert (await client.post("/alert-rules", json={"name": "night"})).status_code == 201
    assert (await client.post("/alert-rules", json={"name": "night"})).status_code == 409


async def test_camera_stats(client, camera):
    await client.post("/alert-rules", json={"name": "critical", "min_risk_level": "critical"})
    for score in (5, 50, 95):
        await post_event(client, camera["id"], score)
    stats = (await client.get(f"/cameras/{camera['id']}/stats")).json()
    assert stats["event_count"] == 3 and stats["open_alerts"] == 1
    assert stats["max_risk_score"] == 95
    assert stats["events_by_level"] == {"low": 1, "medium": 1, "high": 0, "critical": 1}


async def test_stats_of_unknown_camera_is_404(client):
    assert (await client.get("/cameras/ghost/stats")).status_code == 404
