"""Fresh databases per test (testdb_fresh_*), as a user sees them: generated projects under xdist."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from testdb.fresh.kept import kept_databases
from testdb.ownership import list_databases
from testdb.prune import prune_databases
from testdb.servers.base import ServerInfo, admin_connection

pytest_plugins = ["pytester"]
# These test the plugin, not the server: the embedded one is enough (and the fastest).
pytestmark = pytest.mark.parametrize("pg_server", ["embedded"], indirect=True)

SCHEMA = "CREATE TABLE cameras (id text PRIMARY KEY, name text NOT NULL);\n"
KEEP_FAILED_S = 20  # long enough to outlast the run on a busy machine, short enough to wait out


@pytest.fixture
def project(
    pytester: pytest.Pytester,
    pg_server: ServerInfo,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> pytest.Pytester:
    """A one-table project on the test server; tests write what they saw under $FRESH_OUT."""
    pytester.makefile(".sql", schema=SCHEMA)
    pytester.makefile(
        ".toml",
        testdb=textwrap.dedent(f"""
            server = "url"
            url = "{pg_server.url}"
            prefix = "{prefix}"
            [schema]
            sql = ["schema.sql"]
            [fresh]
            pool_size = 2
            keep_failed = "{KEEP_FAILED_S}s"
        """),
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("FRESH_OUT", str(out))
    return pytester


def _run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess("-p", "xdist", "-n", "2", "--testdb", "-p", "no:randomly", *args)


def _seen(name: str) -> list[str]:
    """What the generated tests wrote under $FRESH_OUT, one entry per file."""
    return [path.read_text() for path in sorted(Path(os.environ["FRESH_OUT"]).glob(name + "*"))]


RECORD = """
import os, uuid, psycopg

def record(kind, text):
    with open(os.path.join(os.environ["FRESH_OUT"], f"{kind}-{uuid.uuid4().hex}"), "w") as fh:
        fh.write(text)

def current(url):
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        return conn.execute("SELECT current_database()").fetchone()[0]
"""


def test_each_test_gets_an_empty_database_cloned_from_the_template(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_empty=RECORD
        + """
import pytest

@pytest.mark.parametrize("n", range(8))
def test_starts_empty_and_commits(testdb_fresh_url, n):
    with psycopg.connect(testdb_fresh_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT count(*) FROM cameras").fetchone()[0] == 0
        conn.execute("INSERT INTO cameras VALUES ('c', 'x')")
    record("db", current(testdb_fresh_url))
"""
    )
    _run(project).assert_outcomes(passed=8)
    assert len(_seen("db")) == 8


def test_no_database_is_handed_out_twice(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_twice=RECORD
        + """
import pytest

@pytest.mark.parametrize("n", range(20))
def test_takes_one(testdb_fresh_url, testdb_url, n):
    name = current(testdb_fresh_url)
    assert name != current(testdb_url)  # not the worker's own database either
    record("db", name)
"""
    )
    result = _run(project)
    result.assert_outcomes(passed=20)
    names = _seen("db")
    assert len(names) == len(set(names)) == 20
    result.stdout.fnmatch_lines(["total: 20 hand-outs, * waits*"])


def test_a_crashed_workers_databases_are_recycled_by_its_replacement(
    project: pytest.Pytester, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    project.makepyfile(
        test_crash=RECORD
        + """
def test_1_crash_holding_a_fresh_database(testdb_fresh_url, testdb_worker_id):
    if testdb_worker_id == "gw0":
        record("crashed", current(testdb_fresh_url))
        os._exit(1)

def test_2_replacement_finds_none_of_them(testdb_fresh_url, testdb_worker_id):
    if testdb_worker_id in ("gw0", "gw1"):
        return
    run = os.environ["TESTDB_RUN_ID"][:6]
    with psycopg.connect(os.environ["TESTDB_ADMIN_URL"]) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"%\\\\_f{run}\\\\_gw0\\\\_%",)
        ).fetchall()
    record("replacement", repr(left))
    assert left == []
"""
    )
    result = _run(project, "--dist=each", "--max-worker-restart=2")
    assert result.parseoutcomes().get("failed", 0) == 1  # the crashed test
    assert len(_seen("crashed")) == 1
    assert _seen("replacement") == ["[]"]
    result.stdout.fnmatch_lines(["*reclaimed * of crashed workers*"])
    assert {n for n in database_names() if n.startswith(prefix) and "_tpl_" not in n} == set()


def test_a_failed_tests_database_is_kept_printed_and_pruned_after_its_lease(
    project: pytest.Pytester, pg_server: ServerInfo, prefix: str
) -> None:
    project.makepyfile(
        test_fails="""
from sqlalchemy import text

def test_fails_after_writing(testdb_fresh_engine):
    with testdb_fresh_engine.begin() as conn:
        conn.execute(text("INSERT INTO cameras VALUES ('evidence', 'x')"))
    assert False, "look at the database"

def test_passes(testdb_fresh_url):
    pass
"""
    )
    result = _run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- testdb fresh database -*", f"kept for inspection: *{prefix}_failed_*"])
    kept = re.findall(rf"kept \(failed test\): \S+/({prefix}_failed_[0-9a-f]+)", result.stdout.str())
    assert len(kept) == 1
    assert [db.name for db in kept_databases(pg_server, prefix)] == kept
    with psycopg.connect(_url(pg_server, kept[0])) as conn:
        assert conn.execute("SELECT id FROM cameras").fetchall() == [("evidence",)]
    assert prune_databases(pg_server, prefix=prefix).dropped == []  # its lease still runs
    expires = kept_databases(pg_server, prefix)[0].expires
    assert expires is not None
    time.sleep(max(0.0, expires - time.time()) + 0.5)
    assert prune_databases(pg_server, prefix=prefix).dropped == kept


def test_teardown_leaves_nothing_but_the_template_also_with_spares(
    project: pytest.Pytester, pg_server: ServerInfo, database_names: Callable[[], set[str]]
) -> None:
    before = database_names()
    project.makepyfile(
        test_some="""
import pytest

@pytest.mark.parametrize("n", range(6))
def test_uses_one(testdb_fresh_url, n):
    pass
"""
    )
    _run(project).assert_outcomes(passed=6)
    again = _run(project)  # the controller clones spares ahead, sized from the first run
    again.assert_outcomes(passed=6)
    again.stdout.fnmatch_lines(["total: 6 hand-outs, *spares claimed*"])
    added = database_names() - before
    assert len(added) == 1 and "_tpl_" in added.pop()
    with admin_connection(pg_server) as conn:
        assert not [r.name for r in list_databases(conn) if r.marker and r.marker.role == "fresh"]


def test_fresh_engines_and_environment_point_at_the_fresh_database(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_fixtures="""
import os
import pytest
from sqlalchemy import text

def test_two_connections_see_each_others_commits(testdb_fresh_engine):
    with testdb_fresh_engine.begin() as a:
        a.execute(text("INSERT INTO cameras VALUES ('a', 'x')"))
    with testdb_fresh_engine.connect() as b:
        assert b.execute(text("SELECT count(*) FROM cameras")).scalar() == 1

@pytest.mark.asyncio
async def test_async_engine(testdb_fresh_async_engine):
    async with testdb_fresh_async_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM cameras"))).scalar() == 0

def test_env_points_at_the_fresh_database(testdb_fresh_env, testdb_fresh_url, testdb_url):
    assert os.environ["DATABASE_URL"] == testdb_fresh_env
    fresh = testdb_fresh_url.rsplit("/", 1)[1]
    assert testdb_fresh_env.endswith("/" + fresh)
    assert os.environ["DATABASE_URL_ASYNC"].endswith("/" + fresh)
    assert not testdb_url.endswith("/" + fresh)

def test_env_is_restored_after(testdb_url):
    assert os.environ["DATABASE_URL"].rsplit("/", 1)[1] == testdb_url.rsplit("/", 1)[1]
"""
    )
    _run(project, "-p", "asyncio", "--dist=loadfile").assert_outcomes(passed=4)


HANG = """
import os, pathlib, time

def test_hangs_holding_a_fresh_database(testdb_fresh_url, testdb_worker_id):
    pathlib.Path(os.environ["FRESH_OUT"], testdb_worker_id).write_text("started")
    time.sleep(600)
"""


def _hanging_run(project: pytest.Pytester, pg_server: ServerInfo) -> subprocess.Popen[bytes]:
    """A self-provisioned run whose two workers each hold a fresh database, pools filled."""
    project.makepyfile(test_hang=HANG)
    out = Path(os.environ["FRESH_OUT"])
    command = [sys.executable, "-m", "pytest", "-p", "xdist", "-n", "2", "--testdb", "--dist=each"]
    run = subprocess.Popen(command, cwd=project.path, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        _wait_until(lambda: len(list(out.iterdir())) == 2 and not _cloning(pg_server))
    except BaseException:
        os.killpg(run.pid, signal.SIGKILL)
        raise
    return run


def test_sigint_leaves_nothing_behind(
    project: pytest.Pytester, pg_server: ServerInfo, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    run = _hanging_run(project, pg_server)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: reaches the controller and its workers
    run.wait(timeout=120)
    assert {n for n in database_names() if n.startswith(prefix) and "_tpl_" not in n} == set()


def test_prune_after_sigkill_drops_the_pools_databases(
    project: pytest.Pytester, pg_server: ServerInfo, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    run = _hanging_run(project, pg_server)
    os.killpg(run.pid, signal.SIGKILL)  # the controller and its workers: no teardown runs
    run.wait()
    pools = {n for n in database_names() if n.startswith(prefix + "_f")}
    assert len(pools) >= 2  # the killed run's pools outlived it
    dropped: set[str] = set()

    def pruned() -> bool:  # the run is dead once the server has seen its lock holder go
        dropped.update(prune_databases(pg_server, prefix=prefix).dropped)
        return pools <= dropped

    _wait_until(pruned)
    assert {n for n in database_names() if n.startswith(prefix) and "_tpl_" not in n} == set()


def _cloning(info: ServerInfo) -> bool:
    with admin_connection(info) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query ILIKE 'CREATE DATABASE%'"
        ).fetchone()
    return bool(row and row[0])


def _wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _url(info: ServerInfo, database: str) -> str:
    return info.database_url(database).render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def _no_outer_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated projects must not inherit a testdb run from the environment of this suite."""
    for name in list(os.environ):
        if name.startswith("TESTDB_") or name in ("DATABASE_URL", "TEST_DATABASE_URL", "PYTEST_XDIST_WORKER"):
            monkeypatch.delenv(name)
