"""The plugin's fixtures (all prefixed ``testdb_``), beside the hooks in :mod:`testdb.pytest_plugin`.

PYTEST_DONT_REWRITE: loaded in every pytest run where testdb is installed. Heavy imports
(SQLAlchemy, psycopg, redis) happen inside the fixtures that need them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testdb.pytest_plugin import XDIST_WORKER_VAR, plugin_state

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from testdb.clean import CleanReport
    from testdb.config import Settings
    from testdb.worker import WorkerDatabase

try:  # async fixtures use pytest-asyncio when it is there, else plain (anyio) fixtures
    import pytest_asyncio

    async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - depends on the project's plugins
    async_fixture = pytest.fixture


def _worker(config: pytest.Config) -> WorkerDatabase:
    state = plugin_state(config)
    if state is None or state.worker is None:
        raise pytest.UsageError(
            "testdb: no database for this test process; run under 'testdb run -- pytest ...' or with"
            " 'pytest --testdb'"
        )
    return state.worker


def _settings(config: pytest.Config) -> Settings:
    state = plugin_state(config)
    if state is not None and state.settings is not None:
        return state.settings
    from testdb.config import load_settings

    return load_settings(Path.cwd())


@pytest.fixture(scope="session")
def testdb_worker_id() -> str:
    """'gw0', 'gw1', ... in an xdist worker, 'master' in a serial run."""
    return os.environ.get(XDIST_WORKER_VAR) or "master"


@pytest.fixture(scope="session")
def testdb_database(pytestconfig: pytest.Config) -> WorkerDatabase:
    """This process's database, Redis number and connection budget."""
    return _worker(pytestconfig)


@pytest.fixture(scope="session")
def testdb_url(testdb_database: WorkerDatabase) -> str:
    """SQLAlchemy URL of this worker's database (``postgresql+psycopg://``)."""
    return testdb_database.sqlalchemy_url()


@pytest.fixture(scope="session")
def testdb_async_url(testdb_database: WorkerDatabase, pytestconfig: pytest.Config) -> str:
    """Async SQLAlchemy URL of this worker's database (``postgresql+asyncpg://`` by default)."""
    return testdb_database.async_url(_settings(pytestconfig).async_driver)


@pytest.fixture(scope="session")
def testdb_engine(testdb_url: str, testdb_database: WorkerDatabase) -> Iterator[Engine]:
    """A session-wide Engine on this worker's database, pool sized from the connection budget."""
    from sqlalchemy import create_engine

    pool, overflow = testdb_database.pool
    engine = create_engine(testdb_url, pool_size=pool, max_overflow=overflow, pool_pre_ping=True)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def testdb_async_engine(testdb_async_url: str) -> Iterator[AsyncEngine]:
    """An AsyncEngine on this worker's database.

    It uses NullPool: pooled asyncpg connections belong to the event loop that opened them,
    and pytest-asyncio gives each test its own loop.
    """
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    yield create_async_engine(testdb_async_url, poolclass=NullPool)


@pytest.fixture(scope="session")
def _testdb_cleaner(
    testdb_database: WorkerDatabase, pytestconfig: pytest.Config
) -> Iterator[Callable[[], CleanReport]]:
    """One cleaning connection per worker: the reset function and its plans live in it, so
    each reset after the first is a single short round trip."""
    from testdb.clean import clean_connection
    from testdb.servers.base import connect

    settings = _settings(pytestconfig).clean
    conn = connect(testdb_database.url)
    try:
        clean_connection(conn, settings)  # once per process: a replaced worker never sees residue
        yield lambda: clean_connection(conn, settings)
    finally:
        conn.close()


@pytest.fixture
def testdb_clean(_testdb_cleaner: Callable[[], CleanReport]) -> Callable[[], CleanReport]:
    """A function that empties this worker's database now (FK-safe, one round trip)."""
    return _testdb_cleaner


@pytest.fixture
def testdb_session(testdb_engine: Engine, testdb_clean: Callable[[], CleanReport]) -> Iterator[Session]:
    """A Session on this worker's database; every table is emptied after the test."""
    from sqlalchemy.orm import Session

    session = Session(testdb_engine)
    try:
        yield session
    finally:
        session.close()
        testdb_clean()


@async_fixture
async def testdb_async_session(
    testdb_async_engine: AsyncEngine, testdb_clean: Callable[[], CleanReport]
) -> AsyncIterator[AsyncSession]:
    """An AsyncSession on this worker's database; every table is emptied after the test."""
    from sqlalchemy.ext.asyncio import AsyncSession

    session = AsyncSession(testdb_async_engine, expire_on_commit=False)
    try:
        yield session
    finally:
        await session.close()
        testdb_clean()


@pytest.fixture
def testdb_isolated_session(testdb_engine: Engine) -> Iterator[Session]:
    """A Session inside an outer transaction that is rolled back after the test.

    ``commit()`` in the code under test only releases a SAVEPOINT
    (``join_transaction_mode="create_savepoint"``), so nothing escapes the test.
    """
    from sqlalchemy.orm import Session

    with testdb_engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@async_fixture
async def testdb_async_isolated_session(
    testdb_async_engine: AsyncEngine,
) -> AsyncIterator[AsyncSession]:
    """The async twin of ``testdb_isolated_session``."""
    from sqlalchemy.ext.asyncio import AsyncSession

    async with testdb_async_engine.connect() as conn:
        outer = await conn.begin()
        session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            await session.close()
            await outer.rollback()


def _cache_clear_hooks(settings: Settings) -> list[Callable[[], object]]:
    from testdb.resolve import resolve_attr

    hooks = []
    for spec in settings.pytest.settings_cache_clear:
        try:
            hooks.append(resolve_attr(spec))
        except (ValueError, ImportError, AttributeError) as exc:
            raise pytest.UsageError(f"testdb: pytest.settings_cache_clear entry {spec!r}: {exc}") from None
    return hooks


@pytest.fixture
def testdb_env(testdb_database: WorkerDatabase, pytestconfig: pytest.Config) -> Iterator[str]:
    """Point the app's settings at this worker: DATABASE_URL, DATABASE_URL_ASYNC, REDIS_URL, pool sizes
    and every ``[env]`` template; calls the configured settings-cache-clear hooks; restores all after.

    Yields the worker's plain ``postgresql://`` URL.
    """
    with pointed_at(testdb_database, _settings(pytestconfig)) as url:
        yield url


@contextlib.contextmanager
def pointed_at(database: WorkerDatabase, settings: Settings) -> Iterator[str]:
    """The process environment (and the app's cached settings) pointed at ``database`` for the
    block, everything restored after; yields its plain ``postgresql://`` URL."""
    from testdb.worker import apply_environment, restore_environment, worker_environment

    values = worker_environment(database, settings)
    hooks = _cache_clear_hooks(settings)
    saved = apply_environment(os.environ, values)
    for hook in hooks:
        hook()
    try:
        yield values["DATABASE_URL"]
    finally:
        restore_environment(os.environ, saved)
        for hook in hooks:
            hook()


@pytest.fixture(scope="session")
def testdb_redis_url(testdb_database: WorkerDatabase) -> str:
    """This worker's Redis URL (its own database number; see the README's mapping)."""
    if not testdb_database.target.redis_url:
        pytest.skip("testdb: no redis.url configured for this run")
    return testdb_database.target.redis_url


@pytest.fixture
def testdb_redis(testdb_redis_url: str) -> Iterator[Redis]:
    """A real redis.Redis client on this worker's database; FLUSHDB (never FLUSHALL) afterwards."""
    import redis

    client = redis.Redis.from_url(testdb_redis_url, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        client.close()
        from testdb.envvars import mask_url

        pytest.skip(f"testdb: Redis at {mask_url(testdb_redis_url)} does not answer: {exc}")
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


_UNIQUE_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def testdb_unique_id(testdb_worker_id: str) -> Callable[..., str]:
    """Factory of short ids unique across workers and runs: ``testdb_unique_id("cam")``.

    Worker number and a per-process counter make ids unique within a run; a random part
    makes them unique across runs.
    """
    from testdb.naming import worker_index

    index = worker_index(testdb_worker_id)
    tag = "m" if index is None else _base36(index)

    def unique_id(prefix: str = "test") -> str:
        return f"{prefix}_{secrets.token_hex(3)}{tag}{_base36(next(_UNIQUE_COUNTER))}"

    return unique_id


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out
