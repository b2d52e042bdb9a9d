"""Every way to hold testdb wrong gets one `testdb: error:` line, one `hint:` line, exit 2,
no traceback, and leaves every database as it was.

Most cases are one row of ``CASES``: arguments (``{p}`` is the test's prefix), files to
write into the working directory first, and environment variables. Cases that need a
server-side setup (a database that is in the way, a run already up, a password-checking
server) are separate tests below, with the same assertions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ._cli import Cli, Result, assert_refused
from ._db import ADMIN_PASSWORD, SECRET, database_names, drop_prefixed, new_prefix, password_server_databases

TOO_LONG_WITH_SUFFIXES = "a" * 50  # a valid identifier alone (<= 63 bytes), not with "_tpl_<hash>"
FINE_ALONE_TOO_LONG_UNIQUE = "b" * 45  # fits plain names, not with the --unique run-id suffix
# URLs carry SECRET: no error below may print it.
UNREACHABLE = f"postgresql://postgres:{SECRET}@127.0.0.1:1/postgres"
LOCAL_URL = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    says: str | tuple[str, ...] = ""  # what the error line must contain
    hint: str = ""  # what the hint line must contain
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def up(*args: str) -> tuple[str, ...]:
    """`testdb up` on the local server with the test's prefix, plus ``args``."""
    return ("up", "--prefix", "{p}", "--server", "local", *args)


TOML = "testdb.toml"
STATE = ".testdb/state.json"

CASES = [
    # -- worker counts
    Case("n-zero", up("-n", "0"), says="workers"),
    Case("n-negative", up("-n", "-1"), says="workers"),
    Case("n-not-a-number", up("-n", "abc"), says="-n"),
    Case("n-more-than-max-connections", up("-n", "100000"), says="max_connections"),
    # -- server URLs
    Case("url-malformed", ("up", "--prefix", "{p}", "--url", "not a url"), says="url"),
    Case(
        "url-unknown-scheme",
        ("up", "--prefix", "{p}", "--url", f"mysql://u:{SECRET}@127.0.0.1/db"),
        says="scheme",
    ),
    Case("url-missing-host", ("up", "--prefix", "{p}", "--url", f"postgresql://u:{SECRET}@/db"), says="host"),
    Case(
        "url-port-out-of-range",
        ("up", "--prefix", "{p}", "--url", f"postgresql://u:{SECRET}@127.0.0.1:70000/db"),
        says="70000",
    ),
    Case(
        "url-port-not-a-number",
        ("up", "--prefix", "{p}", "--url", f"postgresql://u:{SECRET}@127.0.0.1:abc/db"),
        says="url",
    ),
    Case("url-unreachable", ("up", "--prefix", "{p}", "--url", UNREACHABLE), says="127.0.0.1:1"),
    Case(
        "url-unreachable-from-TESTDB_URL",
        ("up", "--prefix", "{p}"),
        says="127.0.0.1:1",
        env={"TESTDB_URL": UNREACHABLE},
    ),
    Case(
        "url-unreachable-from-TEST_DATABASE_URL",
        ("up", "--prefix", "{p}"),
        says="127.0.0.1:1",
        env={"TEST_DATABASE_URL": UNREACHABLE},
    ),
    Case("url-server-with-no-url", ("up", "--prefix", "{p}", "--server", "url"), says="url"),
    Case("url-conflicts-with-server-local", up("--url", LOCAL_URL), says="--url"),
    # -- prefixes
    Case("prefix-uppercase", ("up", "--prefix", "Bad", "--server", "local"), says="prefix"),
    Case("prefix-space", ("up", "--prefix", "a b", "--server", "local"), says="prefix"),
    Case("prefix-semicolon", ("up", "--prefix", "x;drop", "--server", "local"), says="prefix"),
    Case("prefix-quote", ("up", "--prefix", "qu'ote", "--server", "local"), says="prefix"),
    Case("prefix-unicode", ("up", "--prefix", "ünï", "--server", "local"), says="prefix"),
    Case("prefix-leading-digit", ("up", "--prefix", "1abc", "--server", "local"), says="prefix"),
    Case("prefix-64-bytes", ("up", "--prefix", "c" * 64, "--server", "local"), says="too long"),
    Case(
        "prefix-too-long-with-suffixes",
        ("up", "--prefix", TOO_LONG_WITH_SUFFIXES, "--server", "local"),
        says="too long",
    ),
    Case(
        "prefix-too-long-with-unique-suffix",
        ("up", "--prefix", FINE_ALONE_TOO_LONG_UNIQUE, "--unique", "--server", "local"),
        says="too long",
    ),
    Case(
        "prefix-is-the-maintenance-database",
        ("up", "--prefix", "postgres", "--server", "local"),
        says="protected",
    ),
    # -- options
    Case("server-unknown", ("up", "--prefix", "{p}", "--server", "foo"), says="foo"),
    Case("format-unknown-up", up("--format", "xml"), says="xml"),
    Case("ttl-not-a-duration", up("--ttl", "forever"), says="ttl"),
    Case("option-unknown", up("--bogus"), says="--bogus"),
    Case("config-option-missing-file", ("--config", "missing.toml", *up()), says="missing.toml"),
    # -- config files and environment
    Case("toml-invalid", up(), says=TOML, files={TOML: b'prefix = "unterminated\n'}),
    Case("toml-unknown-key", up(), says="bogus", files={TOML: b"bogus = 1\n"}),
    Case("toml-wrong-type", up(), says=(TOML, "'workers'"), files={TOML: b'workers = "many"\n'}),
    Case("toml-not-utf8", up(), says=TOML, files={TOML: b'prefix = "e2e_\xff\xfe"\n'}),
    Case(
        "toml-bad-nested-value", up(), says="clean.strategy", files={TOML: b'[clean]\nstrategy = "bogus"\n'}
    ),
    Case(
        "pyproject-unknown-key",
        up(),
        says="pyproject.toml",
        files={"pyproject.toml": b'[project]\nname = "x"\n\n[tool.testdb]\nbogus = 1\n'},
    ),
    Case(
        "env-var-bad-nested-value",
        up(),
        says="TESTDB_CLEAN__STRATEGY",
        env={"TESTDB_CLEAN__STRATEGY": "bogus"},
    ),
    # -- run
    Case("run-without-command", ("run", "--prefix", "{p}", "--server", "local"), says="command"),
    Case(
        "run-command-not-found",
        ("run", "--prefix", "{p}", "--server", "local", "--", "no-such-command-xyz"),
        says="no-such-command-xyz",
    ),
    # -- state
    Case("env-with-nothing-up", ("env",), says="nothing is up"),
    Case("status-state-garbage", ("status",), says="state", files={STATE: b"garbage\n"}),
    Case("env-state-garbage", ("env",), says="state", files={STATE: b"garbage\n"}),
    Case("status-state-other-version", ("status",), says="version", files={STATE: b'{"version": 99}'}),
    Case("env-state-other-version", ("env",), says="version", files={STATE: b'{"version": 99}'}),
    Case("status-state-missing-fields", ("status",), says="state", files={STATE: b'{"version": 1}'}),
    # -- embedded
    Case(
        "embedded-without-binaries",
        ("up", "--prefix", "{p}", "--server", "embedded"),
        says="binaries",
        hint="pip install 'pytest-testdb[embedded]'",
        env={"TESTDB_EMBEDDED__BIN_DIR": "/nonexistent"},
    ),
]


def assert_untouched(
    admin: psycopg.Connection[Any], before: set[str], prefix: str, preexisting: set[str]
) -> None:
    """No database of this test's prefix appeared or went; the server's own ones are all there."""
    assert database_names(admin, prefix) == before
    assert preexisting <= database_names(admin)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_invocation_is_refused_with_one_error_and_a_hint(
    case: Case, cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any], preexisting: set[str]
) -> None:
    for name, content in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    before = database_names(admin, prefix)

    result = cli(*(arg.replace("{p}", prefix) for arg in case.args), env=case.env)

    for fragment in (case.says,) if isinstance(case.says, str) else case.says:
        assert_refused(result, fragment)
    assert case.hint in result.lines("hint:")[0]
    assert SECRET not in result.output
    assert_untouched(admin, before, prefix, preexisting)


def test_unreachable_server_error_says_why(cli: Cli, prefix: str) -> None:
    result = cli("up", "--prefix", prefix, "--url", UNREACHABLE)

    assert_refused(result)
    assert "connection refused" in result.error.lower(), result.error


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: a chmod 000 file is still readable")
def test_unreadable_config_file_is_refused(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any], preexisting: set[str]
) -> None:
    config = tmp_path / "testdb.toml"
    config.write_text(f'prefix = "{prefix}"\n')
    config.chmod(0)
    before = database_names(admin, prefix)

    result = cli("up", "--server", "local")

    assert_refused(result, "testdb.toml")
    assert_untouched(admin, before, prefix, preexisting)


# -- cases that need something on the server first --------------------------------------------


def test_up_refuses_a_prefix_whose_database_exists_unmarked_and_leaves_it_alone(
    cli: Cli, prefix: str, admin: psycopg.Connection[Any], preexisting: set[str]
) -> None:
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(prefix)))
    before = database_names(admin, prefix)

    result = cli("up", "-n", "2", "--prefix", prefix, "--server", "local")

    assert_refused(result, prefix)
    assert_untouched(admin, before, prefix, preexisting)
    assert prefix in database_names(admin, prefix)


def test_up_refuses_the_default_prefix_when_a_foreign_test_database_exists(
    cli: Cli, admin: psycopg.Connection[Any], preexisting: set[str]
) -> None:
    if "test" not in preexisting:
        pytest.skip("this server has no database named 'test' that testdb does not own")

    def default_prefix_databases() -> set[str]:
        return {
            n for n in database_names(admin, "test") if n == "test" or n.startswith(("test_gw", "test_tpl_"))
        }

    before = default_prefix_databases()

    result = cli("up", "-n", "2", "--server", "local")

    assert_refused(result, "'test'")
    assert default_prefix_databases() == before
    assert preexisting <= database_names(admin)


def test_up_twice_in_the_same_directory_refuses_the_second(
    cli: Cli, prefix: str, admin: psycopg.Connection[Any], preexisting: set[str]
) -> None:
    assert cli("up", "-n", "1", "--prefix", prefix, "--server", "local").code == 0
    before = database_names(admin, prefix)

    result = cli("up", "-n", "1", "--prefix", prefix, "--server", "local")

    assert_refused(result, "already up")
    assert_untouched(admin, before, prefix, preexisting)


def test_run_keep_refuses_when_a_run_is_already_up_in_the_directory(
    cli: Cli, prefix: str, admin: psycopg.Connection[Any], preexisting: set[str]
) -> None:
    """`run --keep` records a run here like `up` does, so it must not overwrite one (and orphan it)."""
    assert cli("up", "-n", "1", "--prefix", prefix, "--server", "local").code == 0
    before = database_names(admin, prefix)
    other = new_prefix()
    try:
        result = cli("run", "--keep", "-n", "1", "--prefix", other, "--server", "local", "--", "true")

        assert_refused(result, "already up")
        assert_untouched(admin, before, prefix, preexisting)
        assert database_names(admin, other) == set()
    finally:
        drop_prefixed(admin, other)


# -- a state file that points at a server that is gone ----------------------------------------


@pytest.mark.parametrize("command", ["status", "env"])
def test_state_pointing_at_a_server_that_is_gone_is_refused(
    command: str, cli: Cli, tmp_path: Path, prefix: str
) -> None:
    assert cli("up", "-n", "1", "--prefix", prefix, "--server", "local").code == 0
    state_file = tmp_path / ".testdb" / "state.json"
    state = json.loads(state_file.read_text())
    state["server"]["url"] = UNREACHABLE  # the server moved away or was shut down
    state_file.write_text(json.dumps(state))

    result = cli(command)

    assert_refused(result, "127.0.0.1:1")
    assert SECRET not in result.output


# -- a server that checks passwords -------------------------------------------------------------


def _refused_on_password_server(cli: Cli, port: int, prefix: str, password: str) -> Result:
    """`testdb up` against ``password_server`` with a wrong ``password``; nothing may change there."""
    url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    before = password_server_databases(port)
    result = cli("up", "-n", "1", "--prefix", prefix, "--url", url)
    assert password_server_databases(port) == before
    return result


def test_wrong_password_is_refused_without_printing_it(cli: Cli, password_server: int, prefix: str) -> None:
    result = _refused_on_password_server(cli, password_server, prefix, SECRET)

    assert_refused(result, "authentication failed")
    assert SECRET not in result.output
    assert ADMIN_PASSWORD not in result.output


def test_wrong_percent_encoded_password_is_refused_without_printing_it(
    cli: Cli, password_server: int, prefix: str
) -> None:
    decoded = "p@ss/w0rd:%e2e"
    encoded = "p%40ss%2Fw0rd%3A%25e2e"

    result = _refused_on_password_server(cli, password_server, prefix, encoded)

    assert_refused(result, "authentication failed")
    for text in (decoded, encoded, "p@ss", "p%40ss", "w0rd"):
        assert text not in result.output, text


def test_percent_encoded_password_to_an_unreachable_server_is_not_printed(cli: Cli, prefix: str) -> None:
    result = cli("up", "--prefix", prefix, "--url", "postgresql://u:p%40ss%2Fw0rd%3A%25e2e@127.0.0.1:1/db")

    assert_refused(result, "127.0.0.1:1")
    for text in ("p@ss/w0rd:%e2e", "p%40ss%2Fw0rd%3A%25e2e", "w0rd"):
        assert text not in result.output, text
