"""The embedded server's random password: it connects the tests and is never printed.

`up --server embedded` hands the password out in the environment (stdout: that is what
connects the tests) and keeps it in the 0600 state file; `status`, `status --all` and the
notices never show it.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from ._cli import Cli, Result


@pytest.fixture
def embedded_up(cli: Cli, prefix: str, server_args: list[str], tmp_path: Path) -> Result:
    if server_args[-1] != "embedded":
        pytest.skip("the local server's password is not testdb's")
    result = cli("up", "-n", "1", "--prefix", prefix, *server_args, "--format", "json")
    assert result.code == 0, result.err
    return result


def _password(tmp_path: Path) -> str:
    state = json.loads((tmp_path / ".testdb" / "state.json").read_text())
    password = make_url(state["server"]["url"]).password
    assert password, "the embedded server's URL carries a password"
    return str(password)


def test_the_handed_out_url_connects_with_the_password(embedded_up: Result) -> None:
    env = json.loads(embedded_up.out)
    with psycopg.connect(env["DATABASE_URL"], connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_state_file_holding_the_password_is_private(embedded_up: Result, tmp_path: Path) -> None:
    _password(tmp_path)
    assert stat.S_IMODE((tmp_path / ".testdb" / "state.json").stat().st_mode) == 0o600


def test_up_notices_never_show_the_password(embedded_up: Result, tmp_path: Path) -> None:
    assert _password(tmp_path) not in embedded_up.err


def test_status_never_shows_the_password(embedded_up: Result, cli: Cli, tmp_path: Path) -> None:
    shown = [cli("status"), cli("status", "--all")]
    assert all(result.code == 0 for result in shown), [r.err for r in shown]
    assert _password(tmp_path) not in "".join(result.output for result in shown)
