"""Many runners, one server, one capped role: the shared-server targets of issue 16.

Six ``testdb run --unique -n 3 -- pytest -n 3`` at once through a ``LOGIN CREATEDB`` role
limited to 24 connections: every run passes, nobody sees "too many clients", the schema
template is built once. A SIGKILLed runner's databases are gone once the next run started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ._cli import TESTDB, Result, child_env, finish, run, start, wait_for
from ._db import drop_prefixed, run_databases

RUNS = 6
CAP = 24

#: Each test holds a pooled session while the other workers do the same, so the workers
#: of all admitted runs overlap on the server.
TESTS = """
import time
from sqlalchemy import text

def _use(session):
    assert session.execute(text("SELECT count(*) FROM item")).scalar_one() == 0
    time.sleep(0.1)

""" + "\n".join(f"def test_{i}(testdb_session):\n    _use(testdb_session)\n" for i in range(6))


@pytest.fixture
def capped_url(admin: psycopg.Connection[Any], prefix: str) -> Iterator[str]:
    """A LOGIN CREATEDB role (no superuser) capped at CAP connections, as a --url."""
    role = f"e2e_fleet_{secrets.token_hex(3)}"
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB CONNECTION LIMIT {}").format(sql.Identifier(role), CAP)
    )
    yield f"postgresql://{role}@127.0.0.1:5432/postgres"
    drop_prefixed(admin, prefix)  # the role owns them: they go first
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def project(tmp_path: Path, prefix: str) -> Path:
    """A tiny project: a schema file and six tests that each use a pooled session."""
    (tmp_path / "schema.sql").write_text("CREATE TABLE item (id serial PRIMARY KEY, name text);\n")
    (tmp_path / "testdb.toml").write_text(f'prefix = "{prefix}"\n[schema]\nsql = ["schema.sql"]\n')
    (tmp_path / "test_items.py").write_text(TESTS)
    return tmp_path


def _pytest_run(url: str) -> list[str]:
    pytest_cmd = [sys.executable, "-m", "pytest", "-n", "3", "-q", "-p", "no:cacheprovider", "test_items.py"]
    return ["run", "--url", url, "--unique", "-n", "3", "--wait", "2m", "--", *pytest_cmd]


def test_six_runs_through_a_role_capped_at_24_all_pass_and_build_the_template_once(
    capped_url: str, project: Path
) -> None:
    procs = [start(_pytest_run(capped_url), cwd=project) for _ in range(RUNS)]
    results: list[Result] = [finish(proc, timeout=240) for proc in procs]

    for result in results:
        assert result.code == 0, result.output
        assert "too many clients" not in result.output
        assert "too many connections" not in result.output  # the role's own limit
    built = [r for r in results if "template" in r.err and " built in " in r.err]
    assert len(built) == 1, [r.err for r in results]


def test_after_a_sigkilled_runner_the_next_run_leaves_none_of_its_databases(
    capped_url: str, project: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    victim = subprocess.Popen(
        [str(TESTDB), "run", "--url", capped_url, "--unique", "-n", "3", "--", "sleep", "300"],
        cwd=project,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: SIGKILL takes the runner and its child
    )
    wait_for(lambda: len(run_databases(admin, prefix)) == 4 or victim.poll() is not None, 120, "the victim")
    theirs = run_databases(admin, prefix)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()

    after = run(["run", "--url", capped_url, "--unique", "-n", "1", "--", "true"], cwd=project)

    assert after.code == 0, after.output
    assert not theirs & run_databases(admin, prefix), after.err
