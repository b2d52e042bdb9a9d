"""`testdb run -- CMD`: up, run CMD with the environment, always tear down, exit with CMD's code.

The commands write what they see (their environment, their pid) into the test's directory
and signal readiness through a file, so a test never guesses when the child has started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from ._cli import Cli, Result, finish, start, wait_for
from ._db import pid_alive, processes_mentioning, run_databases

#: A child that records its environment, then waits to be interrupted.
RECORD_AND_SLEEP = "env > seen.env.tmp && mv seen.env.tmp seen.env && exec sleep 30"
#: A child that ignores SIGINT (like a test runner that traps it), records its pid, waits.
IGNORE_SIGINT = (
    "import os, signal, time, pathlib;"
    "signal.signal(signal.SIGINT, signal.SIG_IGN);"
    "pathlib.Path('child.pid.tmp').write_text(str(os.getpid()));"
    "os.replace('child.pid.tmp', 'child.pid');"
    "time.sleep(60)"
)
#: A child that connects to each database it is given and prints which one it reached.
CONNECT_ALL = (
    "import os, psycopg\n"
    "for name in ('DATABASE_URL', 'TESTDB_WORKER_URL_GW0', 'TESTDB_WORKER_URL_GW1'):\n"
    "    with psycopg.connect(os.environ[name]) as conn:\n"
    "        print(name + '=' + conn.execute('SELECT current_database()').fetchone()[0])\n"
    "print('TESTDB_WORKERS=' + os.environ['TESTDB_WORKERS'])\n"
)
STOP_WITHIN_S = 30  # "within a few seconds": teardown is ~1 s, the rest is room for a loaded machine


def seen_env(cwd: Path) -> dict[str, str]:
    """The environment a child recorded with ``env > seen.env``."""
    lines = (cwd / "seen.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def assert_nothing_left(env: dict[str, str], prefix: str, admin: psycopg.Connection[Any], kind: str) -> None:
    """No database of the run on the local server; for an embedded run, no server either."""
    assert run_databases(admin, prefix) == set()
    assert processes_mentioning(env["TESTDB_RUN_ID"]) == [], "a postgres process of this run is still running"
    if kind == "embedded":  # the server testdb started is gone: nothing answers on its port
        url = urlsplit(env["DATABASE_URL"])
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host="127.0.0.1", port=url.port, user="postgres", dbname="postgres", connect_timeout=2
            )


# -- exit codes and environment ------------------------------------------------------------


def test_run_exits_with_the_command_exit_code_and_leaves_nothing_behind(
    cli: Cli, prefix: str, server_args: list[str], tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    result = cli(
        "run", "-n", "2", "--prefix", prefix, *server_args, "--", "sh", "-c", "env > seen.env; exit 3"
    )

    assert result.code == 3, result
    assert "Traceback" not in result.err
    assert_nothing_left(seen_env(tmp_path), prefix, admin, server_args[-1])


def test_run_gives_the_command_the_serial_and_worker_databases(cli: Cli, prefix: str) -> None:
    result = cli(
        "run", "-n", "2", "--prefix", prefix, "--server", "local", "--", sys.executable, "-c", CONNECT_ALL
    )

    assert result.code == 0, result
    assert result.out.split() == [
        f"DATABASE_URL={prefix}",
        f"TESTDB_WORKER_URL_GW0={prefix}_gw0",
        f"TESTDB_WORKER_URL_GW1={prefix}_gw1",
        "TESTDB_WORKERS=2",
    ]


def test_run_provisions_the_default_worker_count_when_the_command_is_not_pytest(
    cli: Cli, prefix: str
) -> None:
    show = "import os; print(os.environ['TESTDB_WORKERS'])"
    result = cli("run", "--prefix", prefix, "--server", "local", "--", sys.executable, "-c", show)

    assert result.code == 0, result
    assert result.out.split() == [str(os.cpu_count())]  # documented default: the CPU count


def test_run_provisions_the_workers_a_pytest_command_asks_for(cli: Cli, prefix: str, tmp_path: Path) -> None:
    fake_pytest = tmp_path / "pytest"  # recognised by name; prints what it was given
    fake_pytest.write_text('#!/bin/sh\necho "$TESTDB_WORKERS"\n')
    fake_pytest.chmod(0o755)

    result = cli("run", "--prefix", prefix, "--server", "local", "--", str(fake_pytest), "-q", "-n", "3")

    assert result.code == 0, result
    assert result.out.split() == ["3"]


# -- signals ---------------------------------------------------------------------------------


def _interrupt(
    tmp_path: Path, args: list[str], signo: int, env: dict[str, str | None] | None = None
) -> tuple[Result, float]:
    """Start ``testdb run ARGS``, wait until its command runs, send ``signo`` to testdb alone.

    Returns what testdb printed and how many seconds it took to exit after the signal.
    """
    proc = start(["run", *args], cwd=tmp_path, env=env)
    try:
        started = (tmp_path / "seen.env", tmp_path / "child.pid")
        wait_for(
            lambda: any(p.exists() for p in started) or proc.poll() is not None, 60, "the command to start"
        )
        assert proc.poll() is None, finish(proc)
        proc.send_signal(signo)
        sent = time.monotonic()
        try:
            result = finish(proc, timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(
                f"testdb still running {STOP_WITHIN_S}s after {signal.Signals(signo).name}: {finish(proc)}"
            ) from None
        return result, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_interrupted_by_sigint_tears_everything_down(
    prefix: str, server_args: list[str], tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    args = ["-n", "2", "--prefix", prefix, *server_args, "--", "sh", "-c", RECORD_AND_SLEEP]

    result, _ = _interrupt(tmp_path, args, signal.SIGINT)

    assert result.code != 0, result
    assert "Traceback" not in result.err
    assert_nothing_left(seen_env(tmp_path), prefix, admin, server_args[-1])


def test_run_terminated_by_sigterm_tears_everything_down(
    prefix: str, tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    args = ["-n", "2", "--prefix", prefix, "--server", "local", "--", "sh", "-c", RECORD_AND_SLEEP]

    result, _ = _interrupt(tmp_path, args, signal.SIGTERM)

    assert result.code != 0, result
    assert "Traceback" not in result.err
    assert_nothing_left(seen_env(tmp_path), prefix, admin, "local")


def test_run_escalates_to_sigterm_when_the_command_ignores_sigint(
    prefix: str, tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    args = ["-n", "1", "--prefix", prefix, "--server", "local", "--", sys.executable, "-c", IGNORE_SIGINT]

    result, _ = _interrupt(tmp_path, args, signal.SIGINT, env={"TESTDB_GRACE": "1"})

    child = int((tmp_path / "child.pid").read_text())
    assert not pid_alive(child), "the command that ignored SIGINT is still running"
    assert result.code != 0, result
    assert run_databases(admin, prefix) == set()


# -- --keep ------------------------------------------------------------------------------------


def test_run_keep_keeps_the_databases_until_down(
    cli: Cli, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    result = cli("run", "--keep", "-n", "1", "--prefix", prefix, "--server", "local", "--", "true")
    assert result.code == 0, result
    assert run_databases(admin, prefix) == {prefix, f"{prefix}_gw0"}

    down = cli("down")

    assert down.code == 0, down
    assert run_databases(admin, prefix) == set()


SERIAL_PROJECT_TEST = """
import os, psycopg

def test_the_worker_database_exists_and_the_serial_one_was_not_made():
    with psycopg.connect(os.environ["TESTDB_ADMIN_URL"]) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    prefix = os.environ["TESTDB_PREFIX"]
    assert os.environ["PYTEST_XDIST_WORKER"] and f"{prefix}_gw0" in names
    assert prefix not in names
"""


def test_run_of_pytest_n_skips_the_serial_database(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    (tmp_path / "test_serial.py").write_text(SERIAL_PROJECT_TEST)
    pytest_cmd = [sys.executable, "-m", "pytest", "-n", "1", "-q", "-p", "no:cacheprovider", "test_serial.py"]
    result = cli("run", "--server", "local", "--prefix", prefix, "--", *pytest_cmd)
    assert result.code == 0, result.output
    assert "created 1 databases" in result.err
    assert run_databases(admin, prefix) == set()
