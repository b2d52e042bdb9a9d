"""pytest side of fresh databases: the ``testdb_fresh_*`` fixtures and the hooks around them.

Registered by :mod:`testdb.pytest_plugin` (``pytest_plugins``). It loads in every pytest
run, so it imports only pytest and the standard library at module level; the pool (psycopg,
SQLAlchemy) is imported and started when the collected tests use a fresh fixture.

- the pool starts as soon as collection shows a test that wants a fresh database, so it
  fills while the first tests are set up;
- a test whose call phase failed keeps its database: the report gets a section with its
  URL (password masked) and the database is renamed in the fixture's teardown;
- each worker sends its pool's figures to the xdist controller (``config.workeroutput``),
  which prints them, and the kept databases, in the terminal summary.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from testdb.config import Settings
    from testdb.fresh.pool import FreshPool, Lease, PoolSpec, Prefill
    from testdb.fresh.stats import PoolStats
    from testdb.worker import WorkerDatabase

try:  # async fixtures use pytest-asyncio when it is there, else plain (anyio) fixtures
    import pytest_asyncio

    async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - depends on the project's plugins
    async_fixture = pytest.fixture

LEASE_FIXTURE = "_testdb_fresh_lease"
WORKEROUTPUT_KEY = "testdb_fresh"
SECTION = "testdb fresh database"

_POOL = pytest.StashKey["FreshPool"]()
_SETTINGS = pytest.StashKey["Settings"]()
_STATS = pytest.StashKey[dict[str, "PoolStats"]]()  # controller (or serial run): worker -> figures
_LEASE = pytest.StashKey["Lease"]()
_PREFILL: pytest.StashKey[Prefill] = pytest.StashKey()
DEMAND_CACHE_KEY = "testdb/fresh_handouts"  # last run's hand-outs: how many spares to clone ahead


def _settings(config: pytest.Config) -> Settings:
    """The run's settings, as the hooks loaded them (read once per process otherwise)."""
    if _SETTINGS not in config.stash:
        from testdb.fixtures import _settings as run_settings

        config.stash[_SETTINGS] = run_settings(config)
    return config.stash[_SETTINGS]


def _spec(config: pytest.Config) -> PoolSpec:
    from testdb.fresh.pool import PoolSpec
    from testdb.worker import current_worker_id

    fresh = _settings(config).fresh
    return PoolSpec.from_environment(
        os.environ,
        current_worker_id(),
        size=fresh.pool_size,
        max_size=fresh.max_pool_size,
        parallel=fresh.parallel,
        keep_failed=fresh.keep_failed,
        timeout=fresh.timeout,
    )


def _pool(config: pytest.Config) -> FreshPool:
    """This process's pool, started on first use."""
    if _POOL not in config.stash:
        from testdb.errors import TestdbError
        from testdb.fresh.pool import FreshPool

        try:
            config.stash[_POOL] = FreshPool(_spec(config)).start()
        except TestdbError as exc:
            pytest.fail(f"testdb: {exc.message} (hint: {exc.hint})", pytrace=False)
    return config.stash[_POOL]


# ---------------------------------------------------------------- hooks


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """xdist controller: clone spares while the workers start, as many as the last run used."""
    cache = getattr(config, "cache", None)
    if hasattr(config, "workerinput") or cache is None or "TESTDB_TEMPLATE" not in os.environ:
        return
    if not getattr(config.option, "numprocesses", None):
        return  # a serial run: its pool starts at collection
    demand = cache.get(_demand_key(config), 0)
    if not isinstance(demand, int) or demand <= 0:
        return
    import psycopg

    from testdb.errors import TestdbError
    from testdb.fresh.pool import ROOM_FACTOR, Prefill

    try:
        spec = _spec(config)
        count = min(demand, spec.workers * ROOM_FACTOR * spec.max_size)  # as much as the pools may hold
        config.stash[_PREFILL] = Prefill(spec, count, spec.parallel * spec.workers).start()
    except (TestdbError, psycopg.Error):
        return  # only an optimisation: the workers' pools report real trouble


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start cloning as soon as we know a test will want a fresh database."""
    if "TESTDB_RUN_ID" not in os.environ or session.config.option.collectonly:
        return
    wanted = sum(LEASE_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items)
    if wanted:
        # Each worker collects every test and runs about its share of them.
        share = -(-wanted // int(os.environ.get("TESTDB_WORKERS") or 1))
        _pool(session.config).expect(share)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test keeps its database: name it now, so the report can say where it is."""
    report = yield
    lease = item.stash.get(_LEASE, None)
    if lease is not None and report.when == "call" and report.failed:
        from testdb.envvars import mask_url

        pool = _pool(item.config)
        lease.keep_as = pool.kept_name()
        url = mask_url(lease.url.set(database=lease.keep_as))
        lasts = _duration(pool.spec.keep_failed)
        text = f"kept for inspection: {url} (for {lasts}; then testdb prune drops it)"
        report.sections.append((SECTION, text))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop what the pool still holds; hand its figures to the controller (or the summary)."""
    config = session.config
    _finish_prefill(config)
    pool = config.stash.get(_POOL, None)
    if pool is None:
        return
    pool.close()
    if hasattr(config, "workeroutput"):
        config.workeroutput[WORKEROUTPUT_KEY] = pool.stats.to_dict()
    else:
        config.stash.setdefault(_STATS, {})[pool.spec.worker_id] = pool.stats


def _finish_prefill(config: pytest.Config) -> None:
    """Controller: drop unclaimed spares; remember this run's demand for the next one."""
    prefill = config.stash.get(_PREFILL, None)
    if prefill is not None:
        import contextlib

        import psycopg

        from testdb.errors import TestdbError

        with contextlib.suppress(TestdbError, psycopg.Error):  # the run's teardown drops them too
            prefill.close()
    per_worker = config.stash.get(_STATS, None)
    cache = getattr(config, "cache", None)
    if per_worker and cache is not None and not hasattr(config, "workerinput"):
        cache.set(_demand_key(config), sum(stats.handouts for stats in per_worker.values()))


def _demand_key(config: pytest.Config) -> str:
    """Demand is remembered per selection (paths, ``-k``, ``-m``): ``pytest tests/unit`` does
    not inherit the fresh databases a full run used."""
    import hashlib

    selection = [*config.args, str(config.option.keyword), str(config.option.markexpr)]
    args = "\0".join(selection)
    return f"{DEMAND_CACHE_KEY}/{hashlib.sha256(args.encode()).hexdigest()[:12]}"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: collect a finished worker's pool figures."""
    data = getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY)
    if data is not None:
        from testdb.fresh.stats import PoolStats

        node.config.stash.setdefault(_STATS, {})[node.gateway.id] = PoolStats.from_dict(data)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    per_worker = config.stash.get(_STATS, None)
    if not per_worker:
        return
    from testdb.fresh.stats import PoolStats

    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "testdb fresh databases")
    for worker_id, stats in sorted(per_worker.items()):
        write(f"{worker_id}: {stats.summary()}")
    total = PoolStats.merged(per_worker.values())
    if len(per_worker) > 1:
        write(f"total: {total.summary()}")
    for url in total.kept:
        write(f"kept (failed test): {url}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def _testdb_fresh_lease(request: pytest.FixtureRequest) -> Iterator[Lease]:
    """A database cloned from the run's template and never handed to another test."""
    pool = _pool(request.config)
    lease = pool.acquire()
    request.node.stash[_LEASE] = lease
    try:
        yield lease
    finally:
        del request.node.stash[_LEASE]
        pool.release(lease)  # dropped in the background, or kept if the test failed


@pytest.fixture
def testdb_fresh_url(_testdb_fresh_lease: Lease) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a fresh database for this test alone."""
    from testdb.urls import with_driver

    return with_driver(_testdb_fresh_lease.url, "psycopg")


@pytest.fixture
def testdb_fresh_async_url(_testdb_fresh_lease: Lease, request: pytest.FixtureRequest) -> str:
    """Async SQLAlchemy URL of the same fresh database (``postgresql+asyncpg://`` by default)."""
    from testdb.urls import with_driver

    return with_driver(_testdb_fresh_lease.url, _settings(request.config).async_driver)


@pytest.fixture
def testdb_fresh_engine(testdb_fresh_url: str, testdb_database: WorkerDatabase) -> Iterator[Engine]:
    """An Engine on this test's fresh database, pool sized from the connection budget; disposed after."""
    from sqlalchemy import create_engine

    pool_size, overflow = testdb_database.pool
    engine = create_engine(testdb_fresh_url, pool_size=pool_size, max_overflow=overflow, pool_pre_ping=True)
    try:
        yield engine
    finally:
        engine.dispose()


@async_fixture
async def testdb_fresh_async_engine(testdb_fresh_async_url: str) -> AsyncIterator[AsyncEngine]:
    """An AsyncEngine on this test's fresh database; disposed after the test."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(testdb_fresh_async_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def testdb_fresh_env(
    _testdb_fresh_lease: Lease, testdb_database: WorkerDatabase, request: pytest.FixtureRequest
) -> Iterator[str]:
    """``testdb_env`` for the fresh database: DATABASE_URL & co and ``[env]`` point at it during
    the test (the settings-cache-clear hooks are called), and are restored after.

    Yields the fresh database's plain ``postgresql://`` URL.
    """
    from dataclasses import replace

    from testdb.fixtures import pointed_at

    fresh = replace(testdb_database, target=replace(testdb_database.target, url=_testdb_fresh_lease.url))
    with pointed_at(fresh, _settings(request.config)) as url:
        yield url


def _duration(seconds: float) -> str:
    """'24h', '30m', '90s': how long a kept database stays."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
