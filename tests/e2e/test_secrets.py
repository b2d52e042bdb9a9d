"""A password given to testdb is printed only where it is the deliverable: the environment
that `up` and `env` print on stdout. Never in notices, tables, errors or tracebacks.

The local server uses trust authentication, so a role with a recognisable password works
for `up`/`status` whatever the password. Every error case in ``test_errors`` also checks
that SECRET (in its URLs) is never printed, including a wrong password on a server that
checks passwords.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ._cli import Result, run
from ._db import SECRET, drop_prefixed, new_prefix


@pytest.fixture(scope="module")
def role(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role on the local server whose password is SECRET."""
    name = "e2e_pw_" + secrets.token_hex(3)
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(name), sql.Literal(SECRET))
    )
    try:
        yield name
    finally:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@dataclass
class SecretRun:
    up: Result
    status: Result
    env: Result
    down: Result


@pytest.fixture(scope="module")
def secret_run(
    role: str, admin: psycopg.Connection[Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecretRun]:
    """up / status / env / down in one directory, on a URL that carries SECRET."""
    prefix = new_prefix()
    cwd = tmp_path_factory.mktemp("secret")
    url = f"postgresql://{role}:{SECRET}@127.0.0.1:5432/postgres"
    try:
        steps = [
            run(["up", "-n", "2", "--prefix", prefix, "--url", url], cwd=cwd),
            run(["status"], cwd=cwd),
            run(["env", "--format", "json"], cwd=cwd),
            run(["down"], cwd=cwd),
        ]
        yield SecretRun(*steps)
    finally:
        drop_prefixed(admin, prefix)


def test_up_prints_the_password_only_in_the_environment_on_stdout(secret_run: SecretRun) -> None:
    assert secret_run.up.code == 0, secret_run.up
    assert SECRET in secret_run.up.out
    assert SECRET not in secret_run.up.err


def test_env_prints_the_password_in_the_urls_it_hands_out(secret_run: SecretRun) -> None:
    assert secret_run.env.code == 0, secret_run.env
    assert f":{SECRET}@" in json.loads(secret_run.env.out)["DATABASE_URL"]
    assert SECRET not in secret_run.env.err


def test_status_masks_the_password(secret_run: SecretRun) -> None:
    assert secret_run.status.code == 0, secret_run.status
    assert SECRET not in secret_run.status.output
    assert ":***@" in secret_run.status.output


def test_down_does_not_print_the_password(secret_run: SecretRun) -> None:
    assert secret_run.down.code == 0, secret_run.down
    assert SECRET not in secret_run.down.output


def test_run_keep_shows_how_to_connect_without_the_password(
    role: str, prefix: str, tmp_path: Path, admin: psycopg.Connection[Any]
) -> None:
    url = f"postgresql://{role}:{SECRET}@127.0.0.1:5432/postgres"

    result = run(["run", "--keep", "-n", "1", "--prefix", prefix, "--url", url, "--", "true"], cwd=tmp_path)

    assert result.code == 0, result
    assert prefix in result.err  # it says where the kept databases are
    assert SECRET not in result.output


DEBUG = {
    "unreachable": f"postgresql://u:{SECRET}@127.0.0.1:1/db",
    "unknown-scheme": f"mysql://u:{SECRET}@127.0.0.1/db",
}


@pytest.mark.parametrize("url", list(DEBUG.values()), ids=list(DEBUG))
def test_debug_traceback_never_prints_the_password(url: str, prefix: str, tmp_path: Path) -> None:
    result = run(["--debug", "up", "--prefix", prefix, "--url", url], cwd=tmp_path)

    assert result.code != 0, result
    assert SECRET not in result.output


def test_url_in_a_config_file_with_an_error_is_not_printed(prefix: str, tmp_path: Path) -> None:
    (tmp_path / "testdb.toml").write_text(
        f'url = "postgresql://u:{SECRET}@127.0.0.1:1/db"\nprefix = "{prefix}"\nworkers = "{SECRET}"\n'
    )

    result = run(["up"], cwd=tmp_path)

    assert result.code == 2, result
    assert SECRET not in result.output
