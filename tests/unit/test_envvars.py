from __future__ import annotations

import io
import json
import subprocess

import dotenv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testdb.envvars import (
    Target,
    format_environment,
    mask_url,
    render_template,
    run_environment,
)
from testdb.errors import ConfigError
from testdb.urls import make_url, with_driver

URL = make_url("postgresql://app:s3cr%40t@db.example:6543/p_gw1")
TARGET = Target(URL, "gw1", "abc123def456", "redis://127.0.0.1:6379/1", 1)

values = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r"), max_size=40)


def test_template_parts() -> None:
    template = "{host}|{port}|{user}|{password}|{database}|{worker}|{run_id}|{redis_url}|{redis_db}"
    assert render_template(template, TARGET) == (
        "db.example|6543|app|s3cr@t|p_gw1|gw1|abc123def456|redis://127.0.0.1:6379/1|1"
    )


def test_template_url_with_driver() -> None:
    assert render_template("{url:asyncpg}", TARGET).startswith("postgresql+asyncpg://app:")
    assert render_template("{url}", TARGET).startswith("postgresql://app:")


def test_socket_url_renders_socket_dir_as_host() -> None:
    target = Target(make_url("postgresql://root@:5432/p?host=/var/run/postgresql"), "master", "r")
    assert render_template("{host}:{port}", target) == "/var/run/postgresql:5432"


def test_run_environment_names_every_worker() -> None:
    other = Target(URL.set(database="p_gw0"), "gw0", "abc123def456")
    env = run_environment(TARGET, {"gw0": other}, {"POSTGRES_DB": "{database}"}, pool=(3, 2))
    assert env["TESTDB_WORKERS"] == "1"
    assert env["TESTDB_WORKER_URL_GW0"].endswith("/p_gw0")
    assert env["DATABASE_URL_ASYNC"].startswith("postgresql+asyncpg://")
    assert env["POSTGRES_DB"] == "p_gw1"
    assert (env["TESTDB_POOL_SIZE"], env["TESTDB_MAX_OVERFLOW"]) == ("3", "2")


def test_mask_url_hides_password() -> None:
    assert "s3cr" not in mask_url(URL)
    assert "***" in mask_url(URL)


def test_with_driver_keeps_password() -> None:
    assert with_driver(URL, "psycopg") == "postgresql+psycopg://app:s3cr%40t@db.example:6543/p_gw1"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ConfigError):
        format_environment({}, "xml")


def test_github_format_uses_heredoc_for_multiline() -> None:
    out = format_environment({"A": "x\ny"}, "github")
    name, rest = out.split("<<", 1)
    delimiter = rest.split("\n", 1)[0]
    assert name == "A"
    assert out == f"A<<{delimiter}\nx\ny\n{delimiter}\n"


@settings(max_examples=60, deadline=None)
@given(value=values)
def test_shell_format_round_trips_through_bash(value: str) -> None:
    script = format_environment({"TESTDB_PROBE": value}, "shell") + 'printf %s "$TESTDB_PROBE"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    assert out.decode() == value


@settings(max_examples=200, deadline=None)
@given(value=values)
def test_dotenv_format_round_trips_through_python_dotenv(value: str) -> None:
    parsed = dotenv.dotenv_values(stream=io.StringIO(format_environment({"A": value}, "dotenv")))
    assert parsed["A"] == value


@settings(max_examples=100, deadline=None)
@given(value=values)
def test_json_format_round_trips(value: str) -> None:
    assert json.loads(format_environment({"A": value}, "json")) == {"A": value}


@settings(max_examples=60, deadline=None)
@given(value=values)
def test_github_format_round_trips_through_github_parser(value: str) -> None:
    assert _parse_github_env(format_environment({"A": value}, "github")) == {"A": value}


def _parse_github_env(text: str) -> dict[str, str]:
    """The $GITHUB_ENV file grammar, as the Actions runner reads it."""
    result: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines) - 1:
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            result[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            name, value = line.split("=", 1)
            result[name] = value
            i += 1
    return result


def test_mask_url_hides_a_password_given_as_a_query_parameter() -> None:
    masked = mask_url("postgresql://root@127.0.0.1:5432/postgres?password=hunter2")
    assert "hunter2" not in masked
