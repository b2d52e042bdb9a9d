"""The pytest plugin as a user sees it: generated projects run in a subprocess under xdist."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from testdb.servers.base import ServerInfo

pytest_plugins = ["pytester"]
# These test the plugin, not the server: the embedded one is enough (and the fastest).
pytestmark = pytest.mark.parametrize("pg_server", ["embedded"], indirect=True)

SCHEMA = """
CREATE TABLE cameras (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (id serial PRIMARY KEY, camera_id text NOT NULL REFERENCES cameras(id));
"""
TESTDB = Path(sys.executable).parent / "testdb"


@pytest.fixture
def project(pytester: pytest.Pytester, pg_server: ServerInfo, prefix: str) -> pytest.Pytester:
    """A project whose testdb.toml points at the test server, with a two-table schema."""
    pytester.makefile(".sql", schema=SCHEMA)
    pytester.makefile(
        ".toml",
        testdb=textwrap.dedent(f"""
            server = "url"
            url = "{pg_server.url}"
            prefix = "{prefix}"
            [schema]
            sql = ["schema.sql"]
            [redis]
            url = "redis://127.0.0.1:6379/0"
            first_db = 8
        """),
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def _run_self_provisioned(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess("-p", "xdist", "-n", "2", "--testdb", *args)


def _run_under_cli(project: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TESTDB), "run", "--", sys.executable, "-m", "pytest", "-p", "xdist", "-n", "2", *args],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


WORKER_DB_TEST = """
import os, psycopg

def _current(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT current_database()").fetchone()[0]

def test_a(testdb_worker_id, testdb_url):
    name = _current(os.environ["DATABASE_URL"])
    assert name.endswith("_" + testdb_worker_id)
    assert _current(testdb_url.replace("+psycopg", "")) == name

def test_b(testdb_worker_id):
    assert _current(os.environ["DATABASE_URL"]).endswith("_" + testdb_worker_id)
"""


def test_each_worker_gets_its_own_database_self_provisioned(project: pytest.Pytester) -> None:
    project.makepyfile(test_workers=WORKER_DB_TEST)
    result = _run_self_provisioned(project, "--dist=each")
    result.assert_outcomes(passed=4)


def test_each_worker_gets_its_own_database_under_testdb_run(project: pytest.Pytester) -> None:
    project.makepyfile(test_workers=WORKER_DB_TEST)
    result = _run_under_cli(project, "--dist=each")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_database_url_is_set_before_conftest_is_imported(project: pytest.Pytester) -> None:
    project.makeconftest("import os\nIMPORT_TIME_URL = os.environ.get('DATABASE_URL')\n")
    project.makepyfile(
        test_env="""
        import os, conftest
        def test_seen_at_import(testdb_worker_id):
            assert conftest.IMPORT_TIME_URL == os.environ["DATABASE_URL"]
            assert testdb_worker_id in conftest.IMPORT_TIME_URL
    """
    )
    _run_self_provisioned(project).assert_outcomes(passed=1)


def test_isolated_session_rolls_back_a_committed_insert(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_iso="""
        from sqlalchemy import text
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_commit_does_not_escape(testdb_isolated_session, n):
            s = testdb_isolated_session
            assert s.execute(text("SELECT count(*) FROM cameras")).scalar() == 0
            s.execute(text("INSERT INTO cameras VALUES (:id, 'x')"), {"id": f"c{n}"})
            s.commit()
            assert s.execute(text("SELECT count(*) FROM cameras")).scalar() == 1
    """
    )
    _run_self_provisioned(project).assert_outcomes(passed=4)


def test_cleaned_session_leaves_empty_tables(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_clean="""
        from sqlalchemy import text
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_starts_empty_and_commits(testdb_session, n):
            s = testdb_session
            assert s.execute(text("SELECT count(*) FROM events")).scalar() == 0
            s.execute(text("INSERT INTO cameras VALUES ('c', 'x')"))
            s.execute(text("INSERT INTO events (camera_id) VALUES ('c')"))
            s.commit()
    """
    )
    _run_self_provisioned(project).assert_outcomes(passed=6)


def test_async_fixtures_work_with_pytest_asyncio(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_async="""
        import pytest
        from sqlalchemy import text

        @pytest.mark.asyncio
        async def test_isolated(testdb_async_isolated_session):
            s = testdb_async_isolated_session
            await s.execute(text("INSERT INTO cameras VALUES ('a', 'x')"))
            await s.commit()
            assert (await s.execute(text("SELECT count(*) FROM cameras"))).scalar() == 1

        @pytest.mark.asyncio
        async def test_cleaned(testdb_async_session):
            s = testdb_async_session
            assert (await s.execute(text("SELECT count(*) FROM cameras"))).scalar() == 0
            await s.execute(text("INSERT INTO cameras VALUES ('b', 'y')"))
            await s.commit()

        @pytest.mark.asyncio
        async def test_cleaned_again(testdb_async_session):
            s = testdb_async_session
            assert (await s.execute(text("SELECT count(*) FROM cameras"))).scalar() == 0
    """
    )
    _run_self_provisioned(project, "-p", "asyncio", "--dist=loadfile").assert_outcomes(passed=3)


def test_redis_numbers_differ_per_worker_and_are_flushed(project: pytest.Pytester) -> None:
    _require_redis()
    project.makepyfile(
        test_redis="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_own_db(testdb_redis, testdb_redis_url, testdb_worker_id, n):
            number = int(testdb_redis_url.rsplit("/", 1)[1])
            assert number == 8 + int(testdb_worker_id[2:])
            assert testdb_redis.dbsize() == 0
            testdb_redis.set("k", n)
    """
    )
    _run_self_provisioned(project).assert_outcomes(passed=4)


def test_testdb_env_sets_and_restores_variables(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_envfx="""
        import os

        def test_inside(testdb_env, testdb_worker_id):
            assert os.environ["DATABASE_URL"] == testdb_env
            assert os.environ["DATABASE_URL_ASYNC"].startswith("postgresql+asyncpg://")
            assert os.environ["REDIS_URL"].endswith("/" + str(8 + int(testdb_worker_id[2:])))
            assert int(os.environ["DATABASE_POOL_SIZE"]) >= 1
            os.environ["DATABASE_URL"] = "changed-by-test"

        def test_after(testdb_env):
            assert os.environ["DATABASE_URL"] != "changed-by-test"
    """
    )
    _run_self_provisioned(project, "-p", "no:randomly", "--dist=loadfile").assert_outcomes(passed=2)


def test_unique_ids_do_not_repeat(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_ids="""
        def test_ids(testdb_unique_id):
            ids = {testdb_unique_id("cam") for _ in range(1000)}
            assert len(ids) == 1000
            assert all(i.startswith("cam_") and len(i) <= 16 for i in ids)
    """
    )
    _run_self_provisioned(project).assert_outcomes(passed=1)


def test_self_provisioning_leaves_nothing_behind(
    project: pytest.Pytester, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    project.makepyfile(test_x="def test_x(testdb_url):\n    assert testdb_url\n")
    _run_self_provisioned(project).assert_outcomes(passed=1)
    leftovers = {n for n in database_names() if n.startswith(prefix) and "_tpl_" not in n}
    assert leftovers == set()


def test_replaced_worker_starts_clean(
    project: pytest.Pytester, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    project.makepyfile(
        test_crash="""
        import os
        from sqlalchemy import text

        def test_1_dirty_then_crash(testdb_engine, testdb_worker_id):
            if testdb_worker_id != "gw0":
                return
            with testdb_engine.begin() as conn:
                conn.execute(text("INSERT INTO cameras VALUES ('residue', 'x')"))
            os._exit(1)

        def test_2_clean(testdb_engine, testdb_worker_id):
            with testdb_engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM cameras")).scalar() == 0
    """
    )
    result = _run_self_provisioned(project, "--dist=each", "--max-worker-restart=2")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 1  # the crashed test is reported failed
    assert "replacing crashed worker" in result.stdout.str() or "worker 'gw0' crashed" in result.stdout.str()
    assert outcomes.get("passed", 0) >= 2
    assert {n for n in database_names() if n.startswith(prefix) and "_tpl_" not in n} == set()


def _require_redis() -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip("no Redis answers on 127.0.0.1:6379")


@pytest.fixture(autouse=True)
def _no_outer_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated projects must not inherit a testdb run from the environment of this suite."""
    for name in list(os.environ):
        if name.startswith("TESTDB_") or name in ("DATABASE_URL", "TEST_DATABASE_URL", "PYTEST_XDIST_WORKER"):
            monkeypatch.delenv(name)
