"""`testdb up` / `env` / `status` / `down` on each server kind, as a user runs them.

The read-only checks share one `testdb up -n 3 --format json` per server kind (``up3``);
every test that changes what is up brings up its own run in its own directory.
"""

from __future__ import annotations

import getpass
import io
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dotenv
import psycopg
import pytest

from ._cli import Cli, Result, run
from ._db import drop_prefixed, new_prefix, pid_alive, processes_mentioning, run_databases

WORKERS = 3
REQUIRED = (
    "DATABASE_URL",
    "TEST_DATABASE_URL",
    "DATABASE_URL_ASYNC",
    "TESTDB_WORKERS",
    "TESTDB_RUN_ID",
    *(f"TESTDB_WORKER_URL_GW{i}" for i in range(WORKERS)),
)


@dataclass
class UpRun:
    cwd: Path
    prefix: str
    result: Result
    env: dict[str, str]
    state: dict[str, Any]

    @property
    def expected_databases(self) -> dict[str, str]:
        """Variable -> the database it must point at."""
        serial = {name: self.prefix for name in ("DATABASE_URL", "TEST_DATABASE_URL", "DATABASE_URL_ASYNC")}
        return serial | {f"TESTDB_WORKER_URL_GW{i}": f"{self.prefix}_gw{i}" for i in range(WORKERS)}


def state_of(cwd: Path) -> dict[str, Any]:
    path = cwd / ".testdb" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture(scope="module")
def up3(
    server_args: list[str], admin: psycopg.Connection[Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpRun]:
    """`testdb up -n 3 --format json --prefix P` on one server kind, looked at by several tests."""
    prefix = new_prefix()
    cwd = tmp_path_factory.mktemp("up3")
    result = run(["up", "-n", str(WORKERS), "--format", "json", "--prefix", prefix, *server_args], cwd=cwd)
    try:
        env = json.loads(result.out) if result.code == 0 else {}
        yield UpRun(cwd, prefix, result, env, state_of(cwd))
    finally:
        if state_of(cwd):
            run(["down", "--stop-server"], cwd=cwd)
        drop_prefixed(admin, prefix)


# -- up ----------------------------------------------------------------------------------


def test_up_exits_0_and_prints_every_variable_as_one_json_object(up3: UpRun) -> None:
    assert up3.result.code == 0, up3.result
    assert isinstance(json.loads(up3.result.out), dict)
    missing = [name for name in REQUIRED if name not in up3.env]
    assert missing == []
    assert up3.env["TESTDB_WORKERS"] == "3"
    assert "TESTDB_WORKER_URL_GW3" not in up3.env
    assert re.fullmatch(r"[0-9a-f]{6,}", up3.env["TESTDB_RUN_ID"])


def test_up_points_each_variable_at_its_own_database(up3: UpRun) -> None:
    pointed = {name: database_of(up3.env[name]) for name in up3.expected_databases}
    assert pointed == up3.expected_databases


def test_up_gives_a_sqlalchemy_async_url_for_the_serial_database(up3: UpRun) -> None:
    sync, async_ = urlsplit(up3.env["DATABASE_URL"]), urlsplit(up3.env["DATABASE_URL_ASYNC"])
    assert async_.scheme in ("postgresql+asyncpg", "postgresql+psycopg")
    assert async_._replace(scheme=sync.scheme) == sync


def test_up_creates_databases_that_accept_connections(up3: UpRun) -> None:
    for name, database in up3.expected_databases.items():
        if name == "DATABASE_URL_ASYNC":
            continue
        with psycopg.connect(up3.env[name], connect_timeout=5) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row == (database,), name


def test_up_creates_exactly_the_serial_and_worker_databases(up3: UpRun) -> None:
    with psycopg.connect(up3.env["DATABASE_URL"], connect_timeout=5) as conn:
        names = {name for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall()}
    made = {name for name in names if name.startswith(up3.prefix) and "_tpl_" not in name}
    assert made == {up3.prefix, *(f"{up3.prefix}_gw{i}" for i in range(WORKERS))}


def test_up_records_its_state_in_a_file_only_its_owner_can_read(up3: UpRun) -> None:
    mode = (up3.cwd / ".testdb" / "state.json").stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)


def test_up_says_which_server_it_uses_on_stderr(up3: UpRun, server_args: list[str]) -> None:
    kind = server_args[-1]
    assert any(line.startswith(f"testdb: server: {kind}") for line in up3.result.err.splitlines()), (
        up3.result.err
    )


# -- env -----------------------------------------------------------------------------------


def _parse_shell(text: str, names: list[str]) -> dict[str, str]:
    """Source ``text`` in a real POSIX shell and read the variables back."""
    assert all(line.startswith("export ") for line in text.splitlines()), text
    reader = "import json, os, sys; print(json.dumps({n: os.environ.get(n) for n in sys.argv[1:]}))"
    done = subprocess.run(
        ["sh", "-c", 'eval "$1"; shift; exec "$@"', "sh", text, sys.executable, "-c", reader, *names],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return {k: v for k, v in json.loads(done.stdout).items() if v is not None}


def _parse_github(text: str) -> dict[str, str]:
    """The $GITHUB_ENV format: NAME=value lines, or NAME<<DELIM ... DELIM blocks."""
    found: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            found[name] = "\n".join(body)
        else:
            name, value = line.split("=", 1)
            found[name] = value
    return found


@pytest.mark.parametrize("fmt", ["shell", "dotenv", "github", "json"])
def test_env_prints_the_environment_of_what_is_up_in_each_format(up3: UpRun, fmt: str) -> None:
    result = run(["env", "--format", fmt], cwd=up3.cwd)
    assert result.code == 0, result
    names = list(up3.env)
    parsed: dict[str, Callable[[], dict[str, Any]]] = {
        "shell": lambda: _parse_shell(result.out, names),
        "dotenv": lambda: dict(dotenv.dotenv_values(stream=io.StringIO(result.out))),
        "github": lambda: _parse_github(result.out),
        "json": lambda: dict(json.loads(result.out)),
    }
    assert parsed[fmt]() == up3.env


# -- status --------------------------------------------------------------------------------


def test_status_exits_0_and_lists_every_database_of_the_run(up3: UpRun) -> None:
    result = run(["status"], cwd=up3.cwd)
    assert result.code == 0, result
    shown = set(re.findall(r"\b" + up3.prefix + r"(?:_gw\d+)?\b", result.output))
    assert shown == {up3.prefix, *(f"{up3.prefix}_gw{i}" for i in range(WORKERS))}
    assert up3.env["TESTDB_RUN_ID"] in result.output


def test_status_shows_the_server_and_the_runs_owner_and_age(up3: UpRun, server_args: list[str]) -> None:
    """Issue 3: "a rich table of the run: server, databases, owner, age"."""
    result = run(["status"], cwd=up3.cwd)
    assert result.code == 0, result
    assert f"server: {server_args[-1]}" in result.output
    assert re.search(r"\bage: \d+s\b", result.output), result.output
    owner = f"{getpass.getuser()}@{socket.gethostname()}"
    assert owner in result.output, f"status does not say who owns the run ({owner}):\n{result.output}"


# -- down ----------------------------------------------------------------------------------


def test_down_drops_every_database_of_the_run_and_forgets_it(
    cli: Cli, prefix: str, admin: psycopg.Connection[Any], tmp_path: Path
) -> None:
    assert cli("up", "-n", "3", "--format", "json", "--prefix", prefix, "--server", "local").code == 0
    assert len(run_databases(admin, prefix)) == 4

    result = cli("down")

    assert result.code == 0, result
    assert run_databases(admin, prefix) == set()
    assert "dropped 4 databases" in result.err
    assert not (tmp_path / ".testdb" / "state.json").exists()


def test_down_stops_the_embedded_server_and_deletes_its_data_dir(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    up = cli("up", "-n", "3", "--format", "json", "--prefix", prefix, "--server", "embedded")
    assert up.code == 0, up
    server = state_of(tmp_path)["server"]
    data_dir, pid = server["data_dir"], server["pid"]
    assert Path(data_dir).is_dir()
    assert processes_mentioning(data_dir), "the embedded postgres should be running"
    port = urlsplit(json.loads(up.out)["DATABASE_URL"]).port

    result = cli("down")

    assert result.code == 0, result
    assert not Path(data_dir).exists()
    assert processes_mentioning(data_dir) == []
    assert not pid_alive(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2)


def test_down_succeeds_when_a_database_was_dropped_behind_its_back(
    cli: Cli, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    assert cli("up", "-n", "2", "--prefix", prefix, "--server", "local").code == 0
    admin.execute(f'DROP DATABASE "{prefix}_gw1" WITH (FORCE)')

    result = cli("down")

    assert result.code == 0, result
    assert run_databases(admin, prefix) == set()


def test_down_with_nothing_up_says_so_and_exits_0(cli: Cli) -> None:
    result = cli("down")

    assert result.code == 0, result
    assert result.out == ""
    assert len(result.err.splitlines()) == 1
    assert "nothing is up" in result.err
