"""Cleaning tables that carry user triggers, as a superuser and as a ``LOGIN CREATEDB`` role.

After a reset every table not kept is empty and no user trigger has fired: the append-only
table's BEFORE DELETE trigger did not refuse, the outbox trigger left no rows, the counter
in a kept table did not move. The schema also has a self-referencing table, a deferred
two-table cycle (one member append-only), a partitioned table whose trigger is cloned onto
its partitions, and an ``ENABLE ALWAYS`` trigger. Runs on the local and embedded servers.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from testdb import clean
from testdb.config import CleanSettings
from testdb.errors import CleanError
from testdb.servers.base import ServerInfo, connect
from testdb.urls import PgUrl

SCHEMA = """
CREATE TABLE counters (name text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION '% is append-only: DELETE refused', TG_TABLE_NAME; END$$;
CREATE FUNCTION to_outbox() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO outbox (event) VALUES ('deleted order ' || OLD.id); RETURN OLD; END$$;
CREATE FUNCTION count_down() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN UPDATE counters SET n = n - 1 WHERE name = 'orders'; RETURN NULL; END$$;

CREATE TABLE accounts (id int PRIMARY KEY, parent_id int REFERENCES accounts);
CREATE TABLE ledger (id int PRIMARY KEY, account_id int NOT NULL REFERENCES accounts);
CREATE TRIGGER ledger_append_only BEFORE DELETE ON ledger FOR EACH ROW EXECUTE FUNCTION refuse();

CREATE TABLE outbox (id serial PRIMARY KEY, event text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, account_id int REFERENCES accounts);
CREATE TRIGGER orders_outbox AFTER DELETE ON orders FOR EACH ROW EXECUTE FUNCTION to_outbox();
CREATE TRIGGER orders_count AFTER DELETE ON orders FOR EACH STATEMENT EXECUTE FUNCTION count_down();

CREATE TABLE cycle_a (id int PRIMARY KEY, b_id int NOT NULL);
CREATE TABLE cycle_b (id int PRIMARY KEY,
                      a_id int NOT NULL REFERENCES cycle_a DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE cycle_a ADD FOREIGN KEY (b_id) REFERENCES cycle_b DEFERRABLE INITIALLY DEFERRED;
CREATE TRIGGER cycle_a_append_only BEFORE DELETE ON cycle_a FOR EACH ROW EXECUTE FUNCTION refuse();

CREATE TABLE readings (id int, day date) PARTITION BY RANGE (day);
CREATE TABLE readings_2025 PARTITION OF readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TRIGGER readings_append_only BEFORE DELETE ON readings FOR EACH ROW EXECUTE FUNCTION refuse();

CREATE TABLE always_audited (id int PRIMARY KEY);
CREATE TRIGGER always_refuse BEFORE DELETE ON always_audited FOR EACH ROW EXECUTE FUNCTION refuse();
ALTER TABLE always_audited ENABLE ALWAYS TRIGGER always_refuse;
"""

FILL = """
INSERT INTO counters VALUES ('orders', 2) ON CONFLICT (name) DO UPDATE SET n = 2;
INSERT INTO accounts VALUES (1, NULL), (2, 1), (3, 2);
INSERT INTO ledger VALUES (1, 1), (2, 3);
INSERT INTO orders VALUES (1, 1), (2, 2);
BEGIN;
INSERT INTO cycle_a VALUES (1, 1);
INSERT INTO cycle_b VALUES (1, 1);
COMMIT;
INSERT INTO readings VALUES (1, '2025-03-01');
INSERT INTO always_audited VALUES (1);
"""

CLEANED = ["accounts", "ledger", "outbox", "orders", "cycle_a", "cycle_b", "readings_2025", "always_audited"]
KEEP = ["counters"]
STRATEGIES = ["delete", "truncate", "auto"]


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {table: _count(conn, table) for table in [*CLEANED, "counters"]}


def _trigger_states(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT tgname, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal").fetchall()
    return dict(rows)


#: Test roles log in with this (the embedded server checks passwords; the local one trusts).
ROLE_PASSWORD = secrets.token_hex(12)


def _new_role(admin: psycopg.Connection[Any], rights: str = "LOGIN CREATEDB") -> str:
    name = f"testdb_role_{secrets.token_hex(4)}"
    statement = sql.SQL("CREATE ROLE {} " + rights + " PASSWORD {}")
    admin.execute(statement.format(sql.Identifier(name), sql.Literal(ROLE_PASSWORD)))
    return name


def _login(pg_server: ServerInfo, role: str) -> PgUrl:
    """The server's maintenance URL for ``role``, with the password that role logs in with."""
    url = pg_server.admin_url
    return url if role == url.username else url.set(username=role, password=ROLE_PASSWORD)


def _drop_role(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop the databases the role owns, what it was granted, then the role."""
    owned = admin.execute(
        "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)",
        (name,),
    ).fetchall()
    for (database,) in owned:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    if admin.info.server_version >= 150000:
        revoke = sql.SQL("REVOKE ALL ON PARAMETER session_replication_role FROM {}")
        _parameter_acl(admin, revoke.format(sql.Identifier(name)))
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _parameter_acl(admin: psycopg.Connection[Any], statement: sql.Composed) -> None:
    """GRANT/REVOKE on a parameter, one test process at a time: concurrent changes to the same
    pg_parameter_acl row fail with "tuple concurrently updated"."""
    with admin.transaction():
        admin.execute("SELECT pg_advisory_xact_lock(%s)", (0x7E57C0,))
        admin.execute(statement)


@pytest.fixture
def admin(pg_server: ServerInfo) -> Iterator[psycopg.Connection[Any]]:
    with connect(pg_server.admin_url) as conn:
        yield conn


@pytest.fixture
def createdb_role(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A ``LOGIN CREATEDB`` role (no superuser), dropped afterwards with what it owns."""
    name = _new_role(admin)
    try:
        yield name
    finally:
        _drop_role(admin, name)


@pytest.fixture(params=["superuser", "createdb"])
def owner(request: pytest.FixtureRequest, admin: psycopg.Connection[Any]) -> str:
    """Who builds the schema and cleans it: the server's superuser, or a LOGIN CREATEDB role."""
    if request.param == "superuser":
        return str(admin.info.user)
    role: str = request.getfixturevalue("createdb_role")
    return role


@pytest.fixture
def db(pg_server: ServerInfo, owner: str) -> Iterator[psycopg.Connection[Any]]:
    """A database created by ``owner``, holding the trigger schema (owned by it), filled."""
    name = f"testdb_trig_{secrets.token_hex(4)}"
    as_owner = _login(pg_server, owner)
    with connect(as_owner) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with connect(as_owner.set(database=name)) as conn:
            conn.execute(SCHEMA)
            conn.execute(FILL)
            yield conn
    finally:
        with connect(pg_server.admin_url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _settings(**changes: Any) -> CleanSettings:
    return CleanSettings(keep=KEEP, **changes)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_empties_tables_with_user_triggers_without_firing_them(
    db: psycopg.Connection[Any], strategy: clean.Strategy
) -> None:
    report = clean.clean_connection(db, _settings(strategy=strategy))
    assert _counts(db) == {**dict.fromkeys(CLEANED, 0), "counters": 1}
    assert db.execute("SELECT n FROM counters").fetchone() == (2,)  # the counter trigger did not fire
    assert "public.ledger" in report.emptied


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_leaves_every_trigger_as_it_was(db: psycopg.Connection[Any], strategy: clean.Strategy) -> None:
    before = _trigger_states(db)
    clean.clean_connection(db, _settings(strategy=strategy))
    assert _trigger_states(db) == before
    assert before["always_refuse"] == "A"


def test_triggers_fire_again_for_the_application_after_a_reset(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings())
    db.execute("INSERT INTO accounts VALUES (1, NULL); INSERT INTO ledger VALUES (1, 1)")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        db.execute("DELETE FROM ledger")


def test_repeated_resets_through_the_session_function_keep_working(db: psycopg.Connection[Any]) -> None:
    for _ in range(3):
        clean.clean_connection(db, _settings())
        assert sum(_counts(db).values()) == 1
        db.execute(FILL)


def test_owner_disables_and_enables_the_triggers_inside_the_reset(db: psycopg.Connection[Any]) -> None:
    plan = clean.load_plan(db, KEEP)
    ledger = clean.Table("public", "ledger")
    assert plan.skip[ledger] == "disable"
    assert set(plan.skip) >= {ledger, clean.Table("public", "orders"), clean.Table("public", "cycle_a")}


def test_only_a_role_that_may_set_the_replication_role_may_skip_foreign_key_checks(
    db: psycopg.Connection[Any], owner: str, admin: psycopg.Connection[Any]
) -> None:
    plan = clean.load_plan(db, KEEP)
    assert plan.fk_checks_skippable is (owner == admin.info.user and False)  # ENABLE ALWAYS trigger
    db.execute("DROP TABLE always_audited")
    plan = clean.load_plan(db, KEEP)
    assert plan.fk_checks_skippable is (owner == admin.info.user)
    report = clean.reset(db, plan, "delete", skip_fk_checks=True)
    assert report.fk_checks_skipped is plan.fk_checks_skippable
    assert _count(db, "ledger") == 0


def test_trigger_created_after_the_plan_is_kept_from_firing_too(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings())
    db.execute(
        "CREATE TRIGGER accounts_append_only BEFORE DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    db.execute(FILL)
    clean.clean_connection(db, _settings())
    assert _count(db, "accounts") == 0


# --- a role that does not own the tables ----------------------------------------------------


@pytest.fixture
def stranger(admin: psycopg.Connection[Any], db: psycopg.Connection[Any], owner: str) -> Iterator[str]:
    """A LOGIN role granted SELECT and DELETE on the tables (not their owner)."""
    if owner == admin.info.user:
        pytest.skip("the tables belong to the superuser: every role test needs a non-superuser owner")
    name = _new_role(admin, "LOGIN")
    db.execute(
        sql.SQL("GRANT SELECT, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(name))
    )
    try:
        yield name
    finally:
        db.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(sql.Identifier(name)))
        _drop_role(admin, name)


def _as(pg_server: ServerInfo, db: psycopg.Connection[Any], role: str) -> psycopg.Connection[Any]:
    return connect(_login(pg_server, role).set(database=db.info.dbname))


def test_role_that_may_not_skip_triggers_is_refused_naming_the_trigger_and_the_grant(
    pg_server: ServerInfo, db: psycopg.Connection[Any], stranger: str
) -> None:
    before = _counts(db)
    with _as(pg_server, db, stranger) as conn, pytest.raises(CleanError) as caught:
        clean.clean_connection(conn, _settings(strategy="delete"))
    assert "without firing its user triggers" in str(caught.value)
    assert "GRANT SET ON PARAMETER session_replication_role" in caught.value.hint
    assert "lock" not in caught.value.hint
    assert _counts(db) == before


def test_role_granted_truncate_empties_triggered_tables_by_truncate(
    pg_server: ServerInfo, db: psycopg.Connection[Any], stranger: str
) -> None:
    db.execute(
        sql.SQL("GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(stranger))
    )
    with _as(pg_server, db, stranger) as conn:
        report = clean.clean_connection(conn, _settings(strategy="delete"))
    assert _counts(db) == {**dict.fromkeys(CLEANED, 0), "counters": 1}
    assert "public.ledger" in report.truncated


def test_role_granted_set_on_replication_role_deletes_in_replica_mode(
    pg_server: ServerInfo, admin: psycopg.Connection[Any], db: psycopg.Connection[Any], stranger: str
) -> None:
    if admin.info.server_version < 150000:
        pytest.skip("GRANT SET ON PARAMETER needs PostgreSQL 15")
    grant = sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}")
    _parameter_acl(admin, grant.format(sql.Identifier(stranger)))
    with _as(pg_server, db, stranger) as conn:
        plan = clean.load_plan(conn, KEEP)
        assert plan.skip[clean.Table("public", "ledger")] == "replica"
        assert plan.skip[clean.Table("public", "always_audited")] is None  # ENABLE ALWAYS fires anyway
        db.execute("DELETE FROM always_audited WHERE false")  # (the owner may; the stranger may not skip it)
        db.execute("ALTER TABLE always_audited DISABLE TRIGGER always_refuse")
        db.execute("DELETE FROM always_audited")
        clean.clean_connection(conn, _settings(strategy="delete"))
    assert _counts(db) == {**dict.fromkeys(CLEANED, 0), "counters": 1}
    assert db.execute("SELECT n FROM counters").fetchone() == (2,)


# --- hints that name the real cause --------------------------------------------------------


def test_trigger_fired_through_a_kept_table_is_blamed_not_lock_holders(db: psycopg.Connection[Any]) -> None:
    db.execute("CREATE TABLE pins (order_id int REFERENCES orders ON DELETE CASCADE)")
    db.execute("CREATE TRIGGER pins_append_only BEFORE DELETE ON pins FOR EACH ROW EXECUTE FUNCTION refuse()")
    db.execute("INSERT INTO pins VALUES (1)")
    with pytest.raises(CleanError) as caught:
        clean.clean_connection(db, CleanSettings(keep=[*KEEP, "pins"]))
    assert "trigger function refuse() raised" in str(caught.value)
    assert "append-only" in str(caught.value)
    assert "lock" not in caught.value.hint
