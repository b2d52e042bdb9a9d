"""pytest plugin (entry point ``testdb``): each xdist worker gets its own database and Redis
number, and the fixtures teams otherwise copy between conftest files.

Hooks stay small; the behaviour lives in :mod:`testdb.worker`, :mod:`testdb.lifecycle` and
:mod:`testdb.clean`. Modes:

- under ``testdb run`` (or after ``eval "$(testdb up)"``): the environment names every
  worker's database; each worker points ``DATABASE_URL`` & co. at its own before any
  conftest or test module is imported;
- self-provisioning (``pytest --testdb`` or ``[tool.testdb.pytest] provision = true``): the
  controller provisions before workers start and tears down at the end.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Only light imports at module level: this plugin loads in every pytest run of an
# environment where testdb is installed, most of which never use it.
if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from testdb import lifecycle
    from testdb.clean import CleanReport
    from testdb.config import Settings
    from testdb.worker import WorkerDatabase

# Fresh-database fixtures and hooks (testdb_fresh_*): a module of their own.
pytest_plugins = ["testdb.fresh.plugin"]

RUN_ID_VAR = "TESTDB_RUN_ID"
XDIST_WORKER_VAR = "PYTEST_XDIST_WORKER"

try:  # async fixtures use pytest-asyncio when it is there, else plain (anyio) fixtures
    import pytest_asyncio

    async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - depends on the project's plugins
    async_fixture = pytest.fixture


class _PluginState:
    """What the hooks set up for this process, and what they must undo."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.worker: WorkerDatabase | None = None
        self.saved_env: dict[str, str | None] = {}
        self.run: contextlib.ExitStack | None = None
        self.progress: lifecycle.Progress | None = None


_STATE = _PluginState()
_STATE_KEY = pytest.StashKey[_PluginState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testdb", "per-worker PostgreSQL databases")
    group.addoption(
        "--testdb",
        action="store_true",
        default=None,
        help="provision databases for this run (self-provisioning mode)",
    )
    group.addoption("--testdb-server", default=None, help="auto | url | local | embedded | docker")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Before any conftest is imported: provision (controller) and point this process at its DB."""
    in_run = RUN_ID_VAR in os.environ
    is_worker = bool(os.environ.get(XDIST_WORKER_VAR))
    if not in_run and (is_worker or not _provision_requested(early_config)):
        return  # not a testdb run: stay out of the way (and import nothing heavy)
    import psycopg

    from testdb.config import load_settings
    from testdb.errors import TestdbError
    from testdb.servers.base import scrub
    from testdb.worker import apply_environment, current_worker_id, resolve_worker, worker_environment

    early_config.stash[_STATE_KEY] = _STATE
    try:
        settings = _STATE.settings = load_settings(Path.cwd())
        if not in_run:
            _self_provision(early_config, settings)
        _STATE.worker = resolve_worker(os.environ, current_worker_id())
        values = worker_environment(_STATE.worker, settings)
        _STATE.saved_env.update(apply_environment(os.environ, values))
    except (TestdbError, psycopg.Error) as exc:
        if _STATE.run is not None:
            _STATE.run.close()
            _STATE.run = None
        if isinstance(exc, TestdbError):
            raise pytest.UsageError(f"testdb: {exc.message} (hint: {exc.hint})") from None
        raise pytest.UsageError(f"testdb: PostgreSQL refused: {scrub(str(exc).strip())}") from None


def _provision_requested(config: pytest.Config) -> bool:
    """``--testdb``, or ``pytest.provision = true`` in testdb.toml / [tool.testdb] / env."""
    flag = config.known_args_namespace.testdb
    if flag is not None:
        return bool(flag)
    if os.environ.get("TESTDB_PYTEST__PROVISION", "").lower() in ("1", "true", "yes"):
        return True
    from testdb.config import find_config_file, read_config_table
    from testdb.errors import TestdbError

    try:
        path = find_config_file(Path.cwd())
        table = read_config_table(path) if path is not None else {}
    except TestdbError as exc:
        raise pytest.UsageError(f"testdb: {exc.message} (hint: {exc.hint})") from None
    section = table.get("pytest", {})
    return isinstance(section, dict) and bool(section.get("provision"))


def _self_provision(config: pytest.Config, settings: Settings) -> None:
    from testdb import lifecycle
    from testdb.config import load_settings
    from testdb.worker import apply_environment

    server = config.known_args_namespace.testdb_server
    if server:
        settings = load_settings(Path.cwd(), {"server": server})
        _STATE.settings = settings
    workers = _requested_workers(config)
    _STATE.progress = progress = lifecycle.Progress()
    stack = contextlib.ExitStack()
    state = stack.enter_context(
        lifecycle.bound_run(
            settings, workers, unique=settings.names == "unique", root=Path.cwd(), progress=progress
        )
    )
    _STATE.run = stack
    # Workers are spawned later and inherit this environment.
    _STATE.saved_env.update(apply_environment(os.environ, lifecycle.environment(state, settings)))


def _requested_workers(config: pytest.Config) -> int:
    value = getattr(config.known_args_namespace, "numprocesses", None)
    if value in ("auto", "logical"):
        return os.cpu_count() or 1
    return max(int(value or 0), 1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_STATE_KEY, None) is not _STATE:
        return
    from testdb.worker import restore_environment

    restore_environment(os.environ, _STATE.saved_env)
    _STATE.saved_env = {}
    if _STATE.run is not None:
        _STATE.run.close()
        _STATE.run = None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    progress = _STATE.progress
    if progress is None or os.environ.get(XDIST_WORKER_VAR):
        return
    parts = [f"{name} {seconds:.2f}s" for name, seconds in progress.timings.items()]
    built = (
        "" if progress.template_built is None else (" (built)" if progress.template_built else " (reused)")
    )
    terminalreporter.write_sep("-", "testdb timings")
    terminalreporter.write_line(", ".join(parts) + f"; template{built}; teardown follows")


# ---------------------------------------------------------------- fixtures


def _worker() -> WorkerDatabase:
    if _STATE.worker is None:
        raise pytest.UsageError(
            "testdb: no database for this test process; run under 'testdb run -- pytest ...' or with"
            " 'pytest --testdb'"
        )
    return _STATE.worker


def _settings() -> Settings:
    from testdb.config import load_settings

    return _STATE.settings or load_settings(Path.cwd())


@pytest.fixture(scope="session")
def testdb_worker_id() -> str:
    """'gw0', 'gw1', ... in an xdist worker, 'master' in a serial run."""
    return os.environ.get(XDIST_WORKER_VAR) or "master"


@pytest.fixture(scope="session")
def testdb_database() -> WorkerDatabase:
    """This process's database, Redis number and connection budget."""
    return _worker()


@pytest.fixture(scope="session")
def testdb_url(testdb_database: WorkerDatabase) -> str:
    """SQLAlchemy URL of this worker's database (``postgresql+psycopg://``)."""
    return testdb_database.sqlalchemy_url()


@pytest.fixture(scope="session")
def testdb_async_url(testdb_database: WorkerDatabase) -> str:
    """Async SQLAlchemy URL of this worker's database (``postgresql+asyncpg://`` by default)."""
    return testdb_database.async_url(_settings().async_driver)


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
def _testdb_cleaner(testdb_database: WorkerDatabase) -> Iterator[Callable[[], CleanReport]]:
    """One cleaning connection per worker: the reset function and its plans live in it, so
    each reset after the first is a single short round trip."""
    from testdb.clean import clean_connection
    from testdb.servers.base import connect

    settings = _settings().clean
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
    hooks = []
    for spec in settings.pytest.settings_cache_clear:
        module_name, _, attr = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise pytest.UsageError(f"testdb: pytest.settings_cache_clear entry {spec!r}: {exc}") from None
        hooks.append(target)
    return hooks


@pytest.fixture
def testdb_env(testdb_database: WorkerDatabase) -> Iterator[str]:
    """Point the app's settings at this worker: DATABASE_URL, DATABASE_URL_ASYNC, REDIS_URL, pool sizes
    and every ``[env]`` template; calls the configured settings-cache-clear hooks; restores all after.

    Yields the worker's plain ``postgresql://`` URL.
    """
    from testdb.worker import apply_environment, restore_environment, worker_environment

    settings = _settings()
    values = worker_environment(testdb_database, settings)
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
