"""Each pytest-xdist worker has its own database and Redis DB: check we are on ours."""

import os
import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

from homesec import db
from homesec.config import get_settings
from homesec.models import Camera
from sqlalchemy import make_url, text

PROJECT = Path(__file__).resolve().parents[1]
PREFIX = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["testdb"]["prefix"]


def _dbname(url: str) -> str:
    return make_url(url).database or ""


def test_worker_id_matches_xdist(testdb_worker_id):
    assert testdb_worker_id == os.environ.get("PYTEST_XDIST_WORKER", "master")


def test_database_name_is_this_workers(testdb_url, testdb_worker_id):
    # <prefix>_gw3 under xdist, <prefix> without it; an optional run suffix may follow.
    worker_part = "" if testdb_worker_id == "master" else f"_{testdb_worker_id}"
    assert re.fullmatch(rf"{PREFIX}{worker_part}(_[0-9a-f]+)?", _dbname(testdb_url))


def test_engine_is_connected_to_the_worker_database(testdb_engine, testdb_url):
    with testdb_engine.connect() as conn:
        assert conn.scalar(text("SELECT current_database()")) == _dbname(testdb_url)


def test_sync_and_async_urls_name_the_same_database(testdb_url, testdb_async_url):
    sync, async_ = make_url(testdb_url), make_url(testdb_async_url)
    assert async_.drivername == "postgresql+asyncpg"
    assert (sync.host, sync.port, sync.database) == (async_.host, async_.port, async_.database)


async def test_async_engine_is_connected_to_the_worker_database(testdb_async_engine, testdb_url):
    async with testdb_async_engine.connect() as conn:
        assert await conn.scalar(text("SELECT current_database()")) == _dbname(testdb_url)


def test_env_points_the_app_settings_at_this_worker(testdb_env, testdb_url, testdb_redis_url):
    settings = get_settings()
    assert _dbname(os.environ["DATABASE_URL"]) == _dbname(testdb_url)
    assert _dbname(settings.database_url) == _dbname(testdb_url)
    assert _dbname(settings.database_url_async) == _dbname(testdb_url)
    assert settings.redis_url == testdb_redis_url
    assert 1 <= settings.database_pool_size <= 20


async def test_app_engines_reach_the_worker_database(testdb_env, testdb_url):
    try:
        with db.get_engine().connect() as conn:
            assert conn.scalar(text("SELECT current_database()")) == _dbname(testdb_url)
        async with db.get_async_session() as session:
            assert await session.scalar(text("SELECT current_database()")) == _dbname(testdb_url)
    finally:
        await db.dispose_engines()


def test_redis_client_uses_the_worker_redis_db(testdb_redis, testdb_redis_url):
    expected_db = int(urlparse(testdb_redis_url).path.lstrip("/") or 0)
    assert testdb_redis.connection_pool.connection_kwargs["db"] == expected_db
    testdb_redis.set("homesec:probe", "1")
    assert testdb_redis.exists("homesec:probe") == 1


def test_unique_ids_are_prefixed_and_distinct(testdb_unique_id):
    ids = [testdb_unique_id("cam") for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("cam_") and len(i) <= 64 for i in ids)


def test_unique_id_is_a_valid_camera_id(testdb_session, testdb_unique_id):
    camera_id = testdb_unique_id("cam")
    testdb_session.add(Camera(id=camera_id, name="Porch", folder_path=f"/srv/{camera_id}"))
    testdb_session.commit()
    assert testdb_session.get(Camera, camera_id) is not None
