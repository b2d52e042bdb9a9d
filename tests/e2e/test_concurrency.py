"""Two `testdb run` on one server and one prefix at the same time.

With plain names the second refuses, naming the live owner, and the first is unharmed;
with ``--unique`` both run, each on its own databases.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from ._cli import assert_refused, finish, run, start, wait_for
from ._db import run_databases

#: Records its run id and database, then holds the run open until the test creates "release".
HOLD = (
    "import os, pathlib, time\n"
    "here = pathlib.Path('.')\n"
    "(here / 'seen.tmp').write_text(os.environ['TESTDB_RUN_ID'] + ' ' + os.environ['DATABASE_URL'])\n"
    "os.replace('seen.tmp', 'seen')\n"
    "deadline = time.monotonic() + 60\n"
    "while not (here / 'release').exists() and time.monotonic() < deadline:\n"
    "    time.sleep(0.05)\n"
)
SHOW_URL = "import os; print(os.environ['DATABASE_URL'])"


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def hold_run(cwd: Path, *args: str) -> Any:
    """Start `testdb run ARGS -- <HOLD>` in ``cwd``; wait until its command runs; (proc, run id, url)."""
    cwd.mkdir()
    proc = start(["run", "-n", "1", *args, "--", sys.executable, "-c", HOLD], cwd=cwd)
    wait_for(
        lambda: (cwd / "seen").exists() or proc.poll() is not None, 60, "the first run's command to start"
    )
    assert proc.poll() is None, finish(proc)
    run_id, url = (cwd / "seen").read_text().split(" ", 1)
    return proc, run_id, url


def test_second_run_on_a_live_runs_prefix_is_refused_naming_it_and_the_first_is_unharmed(
    prefix: str, tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    first, run_id, _ = hold_run(tmp_path / "first", "--prefix", prefix, "--server", "local")
    try:
        (tmp_path / "second").mkdir()
        second = run(
            ["run", "-n", "1", "--prefix", prefix, "--server", "local", "--", "true"], cwd=tmp_path / "second"
        )

        assert_refused(second, f"run {run_id}")
        assert run_databases(admin, prefix) == {prefix, f"{prefix}_gw0"}
    finally:
        (tmp_path / "first" / "release").touch()
        result = finish(first, timeout=60)
    assert result.code == 0, result
    assert run_databases(admin, prefix) == set()


def test_unique_runs_on_one_prefix_both_succeed_on_different_databases(
    prefix: str, tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    first, _, first_url = hold_run(tmp_path / "first", "--prefix", prefix, "--server", "local", "--unique")
    try:
        (tmp_path / "second").mkdir()
        second = run(
            [
                "run",
                "-n",
                "1",
                "--prefix",
                prefix,
                "--server",
                "local",
                "--unique",
                "--",
                sys.executable,
                "-c",
                SHOW_URL,
            ],
            cwd=tmp_path / "second",
        )
    finally:
        (tmp_path / "first" / "release").touch()
        result = finish(first, timeout=60)

    assert second.code == 0, second
    assert result.code == 0, result
    first_db, second_db = database_of(first_url), database_of(second.out.strip())
    assert first_db != second_db
    assert first_db.startswith(prefix + "_") and second_db.startswith(prefix + "_")
    assert run_databases(admin, prefix) == set()
