"""The recent-events cache on this worker's own Redis DB (flushed after each test)."""

from datetime import UTC, datetime

import pytest
from homesec.cache import RecentEventsCache, close_clients, get_redis
from homesec.config import get_settings


def ev(i: int) -> dict:
    return {
        "id": i,
        "camera_id": "yard",
        "risk_score": i % 101,
        "started_at": f"2024-06-01T12:{i % 60:02d}:00Z",
    }


@pytest.fixture
def cache(testdb_redis):
    return RecentEventsCache(testdb_redis, limit=5, ttl=60)


def test_a_cold_camera_is_a_miss(cache):
    assert cache.get("yard") is None


def test_fill_then_get(cache):
    cache.fill("yard", [ev(3), ev(2), ev(1)])
    assert [e["id"] for e in cache.get("yard")] == [3, 2, 1]


def test_fill_replaces_what_was_cached(cache):
    cache.fill("yard", [ev(1)])
    cache.fill("yard", [ev(9), ev(8)])
    assert [e["id"] for e in cache.get("yard")] == [9, 8]


def test_filling_with_nothing_leaves_the_camera_cold(cache, testdb_redis):
    cache.fill("yard", [ev(1)])
    cache.fill("yard", [])
    assert cache.get("yard") is None
    assert testdb_redis.exists(cache.key("yard")) == 0


def test_push_onto_a_cold_list_is_skipped(cache, testdb_redis):
    assert cache.push("yard", ev(1)) is False
    assert testdb_redis.exists(cache.key("yard")) == 0


def test_push_onto_a_warm_list_prepends(cache):
    cache.fill("yard", [ev(2), ev(1)])
    assert cache.push("yard", ev(3)) is True
    assert [e["id"] for e in cache.get("yard")] == [3, 2, 1]


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_lists_are_capped(testdb_redis, limit):
    cache = RecentEventsCache(testdb_redis, limit=limit, ttl=60)
    cache.fill("yard", [ev(0)])
    for i in range(1, 25):
        cache.push("yard", ev(i))
    assert testdb_redis.llen(cache.key("yard")) == limit
    assert [e["id"] for e in cache.get("yard")] == list(range(24, 24 - limit, -1))


def test_fill_is_capped_too(cache, testdb_redis):
    cache.fill("yard", [ev(i) for i in range(20, 0, -1)])
    assert testdb_redis.llen(cache.key("yard")) == 5


@pytest.mark.parametrize("operation", ["fill", "push"])
def test_writes_set_the_ttl(cache, testdb_redis, operation):
    cache.fill("yard", [ev(1)])
    testdb_redis.persist(cache.key("yard"))
    if operation == "fill":
        cache.fill("yard", [ev(2)])
    else:
        cache.push("yard", ev(2))
    assert 0 < testdb_redis.ttl(cache.key("yard")) <= 60


def test_cameras_are_cached_separately(cache):
    cache.fill("yard", [ev(1)])
    cache.fill("porch", [ev(2)])
    cache.invalidate("yard")
    assert cache.get("yard") is None
    assert [e["id"] for e in cache.get("porch")] == [2]


def test_namespaces_do_not_collide(testdb_redis):
    a = RecentEventsCache(testdb_redis, namespace="site_a")
    b = RecentEventsCache(testdb_redis, namespace="site_b")
    a.fill("yard", [ev(1)])
    assert b.get("yard") is None


def test_non_json_values_are_stored_as_text(cache):
    started = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    cache.fill("yard", [{"id": 1, "started_at": started}])
    assert cache.get("yard") == [{"id": 1, "started_at": str(started)}]


@pytest.mark.parametrize(("limit", "ttl"), [(0, 60), (5, 0)])
def test_limit_and_ttl_must_be_positive(testdb_redis, limit, ttl):
    with pytest.raises(ValueError, match="positive"):
        RecentEventsCache(testdb_redis, limit=limit, ttl=ttl)


def test_the_app_client_uses_the_worker_redis(testdb_env, testdb_redis):
    app_client = get_redis(get_settings().redis_url)
    try:
        app_client.set("homesec:ping", "pong")
        assert testdb_redis.get("homesec:ping") in (b"pong", "pong")
    finally:
        close_clients()
