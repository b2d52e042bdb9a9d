"""A full testdb cycle as a ``LOGIN CREATEDB`` role, the right a managed server gives a test role.

The role is created on the local server for each test (unique name) and dropped afterwards
with every database it owns. Every command reaches the server as that role by URL
(``--url postgresql://ROLE@127.0.0.1:5432/postgres``): ``up``, ``env``, ``status``,
``clean``, ``down``, ``run``, ``prune``, the plugin's fixtures in a pytest project, the
schema template (built as the role, ``ALLOW_CONNECTIONS false``), ``DROP … WITH (FORCE)``
and the liveness lock. The schema has the cases cleaning must handle: an append-only table
whose trigger refuses DELETE, an outbox trigger, a counter in a kept table, a
self-referencing table and a deferred two-table cycle.
"""

from __future__ import annotations

import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from testdb.ownership import Marker, set_marker

from ._cli import Cli, assert_refused, finish, start, wait_for
from ._db import database_names

SCHEMA = """
CREATE TABLE counters (name text PRIMARY KEY, n int NOT NULL);
INSERT INTO counters VALUES ('orders', 0);
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION '% is append-only: DELETE refused', TG_TABLE_NAME; END$$;
CREATE FUNCTION to_outbox() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO outbox (event) VALUES ('deleted ' || OLD.id); RETURN OLD; END$$;
CREATE FUNCTION count_down() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN UPDATE counters SET n = n - 1 WHERE name = 'orders'; RETURN OLD; END$$;
CREATE TABLE employees (id int PRIMARY KEY, manager_id int REFERENCES employees);
CREATE TABLE ledger (id int PRIMARY KEY, employee_id int NOT NULL REFERENCES employees);
CREATE TRIGGER ledger_append_only BEFORE DELETE ON ledger FOR EACH ROW EXECUTE FUNCTION refuse();
CREATE TABLE outbox (id serial PRIMARY KEY, event text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY);
CREATE TRIGGER orders_outbox AFTER DELETE ON orders FOR EACH ROW EXECUTE FUNCTION to_outbox();
CREATE TRIGGER orders_count AFTER DELETE ON orders FOR EACH ROW EXECUTE FUNCTION count_down();
CREATE TABLE cycle_a (id int PRIMARY KEY, b_id int NOT NULL);
CREATE TABLE cycle_b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES cycle_a DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE cycle_a ADD FOREIGN KEY (b_id) REFERENCES cycle_b DEFERRABLE INITIALLY DEFERRED;
"""

FILL = """
INSERT INTO employees VALUES (1, NULL), (2, 1);
INSERT INTO ledger VALUES (1, 2);
INSERT INTO orders VALUES (1), (2);
BEGIN;
INSERT INTO cycle_a VALUES (1, 1);
INSERT INTO cycle_b VALUES (1, 1);
COMMIT;
"""

CLEANED = ("employees", "ledger", "outbox", "orders", "cycle_a", "cycle_b")

#: A pytest project whose tests use the plugin's fixtures: rows written through
#: ``testdb_session`` are gone for the next test, ``testdb_clean`` empties on demand.
PLUGIN_TESTS = """
from sqlalchemy import text


def test_a_writes(testdb_session):
    testdb_session.execute(text("INSERT INTO employees VALUES (1, NULL)"))
    testdb_session.execute(text("INSERT INTO ledger VALUES (1, 1)"))
    testdb_session.execute(text("INSERT INTO orders VALUES (7)"))
    testdb_session.commit()


def test_b_sees_an_empty_database(testdb_session):
    for table in ("employees", "ledger", "orders", "outbox"):
        assert testdb_session.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
    assert testdb_session.execute(text("SELECT n FROM counters")).scalar() == 0


def test_c_clean_on_demand(testdb_engine, testdb_clean):
    with testdb_engine.begin() as conn:
        conn.execute(text("INSERT INTO orders VALUES (1)"))
    report = testdb_clean()
    assert report.emptied == ("public.orders",)
"""


@pytest.fixture
def role(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh ``LOGIN CREATEDB`` role on the local server; dropped with what it owns."""
    name = f"testdb_e2e_role_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        owned = admin.execute(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = %s",
            (name,),
        ).fetchall()
        for (database,) in owned:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def project(tmp_path: Path, role: str, prefix: str, admin: psycopg.Connection[Any]) -> Path:
    """A project whose testdb.toml points at the local server as ``role``, with the schema."""
    url = f"postgresql://{role}@127.0.0.1:{admin.info.port}/postgres"
    (tmp_path / "schema.sql").write_text(SCHEMA)
    (tmp_path / "testdb.toml").write_text(
        f'server = "url"\nurl = "{url}"\nprefix = "{prefix}"\n'
        '[schema]\nsql = ["schema.sql"]\n[clean]\nkeep = ["counters"]\n'
    )
    return tmp_path


def _as_role(admin: psycopg.Connection[Any], role: str, database: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1", port=admin.info.port, user=role, dbname=database, autocommit=True
    )


def _counts(admin: psycopg.Connection[Any], role: str, database: str) -> dict[str, int]:
    with _as_role(admin, role, database) as conn:
        found = {}
        for table in (*CLEANED, "counters"):
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            found[table] = int(row[0]) if row else -1
        return found


def _counter(admin: psycopg.Connection[Any], role: str, database: str) -> int:
    with _as_role(admin, role, database) as conn:
        row = conn.execute("SELECT n FROM counters WHERE name = 'orders'").fetchone()
        return int(row[0]) if row else -1


def _owner_of(admin: psycopg.Connection[Any], database: str) -> str:
    row = admin.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
    ).fetchone()
    return str(row[0]) if row else ""


def test_up_env_status_clean_down_as_a_createdb_role(
    cli: Cli, project: Path, role: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    up = cli("up", "-n", "2")
    assert up.code == 0, up.err
    databases = database_names(admin, prefix)
    workers = {prefix, f"{prefix}_gw0", f"{prefix}_gw1"}
    assert workers <= databases
    assert all(_owner_of(admin, name) == role for name in databases)
    template = next(name for name in databases if "_tpl_" in name)
    allowed = admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (template,)).fetchone()
    assert allowed == (False,)

    env = cli("env", "--format", "json")
    assert env.code == 0, env.err
    assert f"{role}@" in env.out
    status = cli("status")
    assert status.code == 0, status.err
    assert f"{prefix}_gw1" in status.out + status.err

    for name in workers:
        with _as_role(admin, role, name) as conn:
            conn.execute(FILL)
    cleaned = cli("clean")
    assert cleaned.code == 0, cleaned.err
    for name in workers:
        assert _counts(admin, role, name) == {**dict.fromkeys(CLEANED, 0), "counters": 1}
        assert _counter(admin, role, name) == 0  # the DELETE trigger on orders did not fire

    down = cli("down", "--templates")
    assert down.code == 0, down.err
    assert database_names(admin, prefix) == set()


def test_down_drops_databases_the_application_still_connects_to(
    cli: Cli, project: Path, role: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    assert cli("up", "-n", "1").code == 0
    with _as_role(admin, role, f"{prefix}_gw0"):  # an application that did not close its pool
        down = cli("down")
    assert down.code == 0, down.err
    assert database_names(admin, prefix) <= {n for n in database_names(admin, prefix) if "_tpl_" in n}


def test_run_gives_the_command_databases_it_can_write_as_the_role(
    cli: Cli, project: Path, role: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    write = (
        "import os, psycopg\n"
        "with psycopg.connect(os.environ['TESTDB_WORKER_URL_GW1'], autocommit=True) as conn:\n"
        '    conn.execute("INSERT INTO orders VALUES (1)")\n'
        "    print(conn.execute('SELECT current_user').fetchone()[0])\n"
    )
    result = cli("run", "-n", "2", "--", sys.executable, "-c", write)
    assert result.code == 0, result.err
    assert result.out.strip().splitlines()[-1] == role
    assert {n for n in database_names(admin, prefix) if "_tpl_" not in n} == set()


def test_run_holds_its_liveness_lock_as_the_role(
    project: Path, role: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    proc = start(["run", "-n", "1", "--", "sleep", "30"], cwd=project)
    try:
        wait_for(lambda: f"{prefix}_gw0" in database_names(admin, prefix), 60, "the run's databases")
        holders = admin.execute(
            "SELECT a.usename FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.granted",
            (0x7E57DB,),
        ).fetchall()
        assert (role,) in holders
    finally:
        proc.send_signal(signal.SIGINT)
        finish(proc)
    assert {n for n in database_names(admin, prefix) if "_tpl_" not in n} == set()


def test_prune_reclaims_a_killed_run_of_the_role(
    cli: Cli, project: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    proc = start(["run", "-n", "1", "--", "sleep", "60"], cwd=project)
    try:
        # The state file is written once every database exists and is marked: a kill before
        # that can leave a clone whose marker never landed, which prune rightly never touches.
        wait_for((project / ".testdb" / "state.json").exists, 60, "the run's databases")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pruned = cli("prune")
    assert pruned.code == 0, pruned.err
    assert {n for n in database_names(admin, prefix) if "_tpl_" not in n} == set()


def test_prune_leaves_another_roles_dead_run_to_its_owner(
    cli: Cli, project: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    theirs = f"{prefix}_theirs"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(theirs)))  # owned by the superuser
    set_marker(admin, theirs, Marker.for_run(secrets.token_hex(6), "worker", prefix, ttl=None))
    pruned = cli("prune", "--prefix", prefix)
    assert pruned.code == 0, pruned.err
    assert f"skipped {theirs}: owned by another role" in pruned.err
    assert theirs in database_names(admin, prefix)


def test_plugin_fixtures_clean_between_tests_as_the_role(
    cli: Cli, project: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    (project / "test_app.py").write_text(PLUGIN_TESTS)
    result = cli("run", "-n", "2", "--", sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:randomly")
    assert result.code == 0, result.out + result.err
    assert "3 passed" in result.out


def test_role_without_createdb_is_told_what_to_grant(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    name = f"testdb_e2e_login_{secrets.token_hex(4)}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        url = f"postgresql://{name}@127.0.0.1:{admin.info.port}/postgres"
        result = cli("up", "--url", url, "--prefix", prefix)
        assert_refused(result, "CREATEDB")
        assert f"ALTER ROLE {name} CREATEDB" in result.lines("hint:")[0]
        assert database_names(admin, prefix) == set()
    finally:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
