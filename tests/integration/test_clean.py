"""testdb.clean against real PostgreSQL (local 15 and embedded 18, via ``pg_server``).

One schema has every feature the cleaner must handle: a self-reference, a two-table cycle of
NOT NULL non-deferrable RESTRICT keys, a three-table cycle mixing CASCADE / SET NULL with one
deferrable edge, composite and cross-schema keys, a partitioned table referenced by others
and one referencing others, INHERITS, a quoted name with a space and capitals, an unlogged
table, a table without a primary key, kept tables, a view and a materialized view.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from testdb import clean
from testdb.config import CleanSettings
from testdb.errors import CleanError
from testdb.servers.base import ServerInfo, connect

SCHEMA = """
CREATE SCHEMA billing;

CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
CREATE TABLE billing.currencies (code text PRIMARY KEY);

CREATE TABLE employees (
    id serial PRIMARY KEY,
    manager_id int REFERENCES employees ON DELETE RESTRICT,
    name text NOT NULL
);

-- two-table cycle: NOT NULL, not deferrable, RESTRICT both ways
CREATE TABLE authors (id int PRIMARY KEY, favourite_book_id int NOT NULL);
CREATE TABLE books (id int PRIMARY KEY, author_id int NOT NULL REFERENCES authors ON DELETE RESTRICT);
ALTER TABLE authors ADD FOREIGN KEY (favourite_book_id) REFERENCES books ON DELETE RESTRICT;

-- three-table cycle: CASCADE, SET NULL, and one deferrable edge
CREATE TABLE nodes_a (id int PRIMARY KEY, c_id int NOT NULL);
CREATE TABLE nodes_b (id int PRIMARY KEY, a_id int NOT NULL REFERENCES nodes_a ON DELETE CASCADE);
CREATE TABLE nodes_c (id int PRIMARY KEY, b_id int REFERENCES nodes_b ON DELETE SET NULL);
ALTER TABLE nodes_a ADD FOREIGN KEY (c_id) REFERENCES nodes_c DEFERRABLE INITIALLY DEFERRED;

-- composite and cross-schema keys, a quoted name, an identity column
CREATE TABLE billing.accounts (region text, number int, PRIMARY KEY (region, number));
CREATE TABLE "Order Items" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region text NOT NULL,
    account int NOT NULL,
    currency text NOT NULL REFERENCES billing.currencies,
    FOREIGN KEY (region, account) REFERENCES billing.accounts ON DELETE CASCADE
);
CREATE TABLE billing.invoices (
    id serial PRIMARY KEY,
    item_id bigint REFERENCES "Order Items" ON DELETE SET NULL,
    region text NOT NULL,
    account int NOT NULL,
    FOREIGN KEY (region, account) REFERENCES billing.accounts ON DELETE RESTRICT
);

-- a partitioned table referenced from another schema, and one referencing a table
CREATE TABLE events (id int, day date, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE billing."EventNotes" (
    id serial PRIMARY KEY,
    event_id int NOT NULL,
    event_day date NOT NULL,
    FOREIGN KEY (event_id, event_day) REFERENCES events
);
CREATE TABLE readings (
    id int, day date, employee_id int NOT NULL REFERENCES employees,
    PRIMARY KEY (id, day)
) PARTITION BY LIST (day);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- inheritance, unlogged, no primary key
CREATE TABLE vehicles (id serial PRIMARY KEY, owner_id int REFERENCES employees ON DELETE SET NULL);
CREATE TABLE trucks (payload int) INHERITS (vehicles);
CREATE UNLOGGED TABLE sessions (token text PRIMARY KEY, employee_id int NOT NULL REFERENCES employees);
CREATE TABLE audit_log (at timestamptz NOT NULL DEFAULT now(), message text,
                        employee_id int REFERENCES employees ON DELETE CASCADE);

CREATE VIEW book_authors AS
    SELECT b.id AS book, a.id AS author FROM books b JOIN authors a ON a.id = b.author_id;
CREATE MATERIALIZED VIEW account_counts AS SELECT region, count(*) AS n FROM billing.accounts GROUP BY region;
"""

FILL_KEPT = """
INSERT INTO alembic_version VALUES ('abc123');
INSERT INTO billing.currencies VALUES ('EUR'), ('USD');
"""

FILL = """
INSERT INTO employees (manager_id, name) VALUES (NULL, 'boss');
INSERT INTO employees (manager_id, name) SELECT 1, 'e' || g FROM generate_series(1, 3) g;
WITH a AS (INSERT INTO authors VALUES (1, 10), (2, 20))
INSERT INTO books VALUES (10, 1), (20, 2);
INSERT INTO nodes_c VALUES (1, NULL);
INSERT INTO nodes_a VALUES (1, 1);
INSERT INTO nodes_b VALUES (1, 1);
UPDATE nodes_c SET b_id = 1;
INSERT INTO billing.accounts VALUES ('eu', 1), ('eu', 2), ('us', 1);
INSERT INTO "Order Items" (region, account, currency) VALUES ('eu', 1, 'EUR'), ('us', 1, 'USD');
INSERT INTO billing.invoices (item_id, region, account) SELECT id, region, account FROM "Order Items";
INSERT INTO events VALUES (1, '2024-05-01'), (2, '2025-05-01');
INSERT INTO billing."EventNotes" (event_id, event_day) VALUES (1, '2024-05-01'), (2, '2025-05-01');
INSERT INTO readings VALUES (1, '2024-01-01', 2);
INSERT INTO vehicles (owner_id) VALUES (1);
INSERT INTO trucks (owner_id, payload) VALUES (2, 40);
INSERT INTO sessions VALUES ('t1', 1), ('t2', 3);
INSERT INTO audit_log (message, employee_id) VALUES ('hello', 1), ('orphan', NULL);
"""

CLEANED = [
    "public.employees",
    "public.authors",
    "public.books",
    "public.nodes_a",
    "public.nodes_b",
    "public.nodes_c",
    "billing.accounts",
    'public."Order Items"',
    "billing.invoices",
    "public.events",
    'billing."EventNotes"',
    "public.readings",
    "public.vehicles",
    "public.trucks",
    "public.sessions",
    "public.audit_log",
]
KEEP = ["alembic_version", "billing.currencies"]
STRATEGIES = ["delete", "truncate", "auto"]


def _rows(conn: psycopg.Connection[Any], relation: str) -> int:
    """Rows of a relation, ``ONLY`` (children and partitions are counted on their own)."""
    row = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.SQL(relation))).fetchone()
    assert row is not None
    return int(row[0])


def _every_table_row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows in every table and partition of the database (ONLY each)."""
    names = conn.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname IN ('public', 'billing') ORDER BY 1"
    ).fetchall()
    return {name: _rows(conn, name) for (name,) in names}


@pytest.fixture
def db(scratch_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a scratch database holding the full schema, filled."""
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(FILL_KEPT)
        conn.execute(FILL)
        conn.execute("REFRESH MATERIALIZED VIEW account_counts")
        yield conn


@pytest.fixture
def other_db(pg_server: ServerInfo) -> Iterator[psycopg.Connection[Any]]:
    """A second database on the same server, with the same schema and rows; dropped after."""
    name = f"testdb_clean_other_{secrets.token_hex(4)}"
    with connect(pg_server.admin_url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with connect(pg_server.database_url(name)) as conn:
            conn.execute(SCHEMA)
            conn.execute(FILL_KEPT)
            conn.execute(FILL)
            yield conn
    finally:
        with connect(pg_server.admin_url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _settings(**changes: Any) -> CleanSettings:
    return CleanSettings(keep=KEEP, **changes)


def test_plan_lists_every_table_once_and_no_view_partition_or_kept_table(
    db: psycopg.Connection[Any],
) -> None:
    plan = clean.load_plan(db, KEEP)
    names = [t.display for t in plan.tables]
    assert sorted(names) == sorted(CLEANED)
    assert {t.display for t in plan.kept} == {"public.alembic_version", "billing.currencies"}


def test_plan_puts_referencing_tables_first_and_cycles_in_one_step(db: psycopg.Connection[Any]) -> None:
    plan = clean.load_plan(db, KEEP)
    step_of = {t.display: i for i, step in enumerate(plan.steps) for t in step}
    assert step_of["public.authors"] == step_of["public.books"]
    assert step_of["public.nodes_a"] == step_of["public.nodes_b"] == step_of["public.nodes_c"]
    assert step_of['billing."EventNotes"'] < step_of["public.events"]
    assert step_of['public."Order Items"'] < step_of["billing.accounts"]
    assert step_of["billing.invoices"] < step_of['public."Order Items"']
    assert step_of["public.readings"] < step_of["public.employees"]
    assert step_of["public.trucks"] < step_of["public.employees"]
    assert len(plan.steps) == len(CLEANED) - 3  # the 2-cycle and the 3-cycle share steps


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_empties_every_table(db: psycopg.Connection[Any], strategy: clean.Strategy) -> None:
    report = clean.clean_connection(db, _settings(strategy=strategy))
    counts = _every_table_row_counts(db)
    assert {name: n for name, n in counts.items() if n} == {
        "public.alembic_version": 1,
        "billing.currencies": 2,
    }
    assert sorted(report.emptied) == sorted(CLEANED)
    assert report.tables == len(CLEANED)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_reports_exact_row_counts(db: psycopg.Connection[Any], strategy: clean.Strategy) -> None:
    report = clean.clean_connection(db, _settings(strategy=strategy))
    # 4 employees, 2+2 cycle, 3 nodes, 3 accounts, 2 items, 2 invoices, 2 events, 2 notes,
    # 1 reading, 1 vehicle, 1 truck, 2 sessions, 2 audit rows
    assert report.rows == 29
    assert report.rows_exact


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_keeps_views_and_materialized_views(
    db: psycopg.Connection[Any], strategy: clean.Strategy
) -> None:
    clean.clean_connection(db, _settings(strategy=strategy))
    kinds = dict(
        db.execute(
            "SELECT relname, relkind FROM pg_class WHERE relname IN ('book_authors', 'account_counts')"
        )
    )
    assert kinds == {"book_authors": "v", "account_counts": "m"}
    assert _rows(db, "book_authors") == 0
    assert _rows(db, "account_counts") == 2  # a materialized view is never touched


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_leaves_kept_tables_alone(db: psycopg.Connection[Any], strategy: clean.Strategy) -> None:
    clean.clean_connection(db, _settings(strategy=strategy))
    assert _rows(db, "alembic_version") == 1
    assert _rows(db, "billing.currencies") == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_leaves_another_database_untouched(
    db: psycopg.Connection[Any], other_db: psycopg.Connection[Any], strategy: clean.Strategy
) -> None:
    before = _every_table_row_counts(other_db)
    clean.clean_connection(db, _settings(strategy=strategy))
    assert _every_table_row_counts(other_db) == before
    assert sum(before.values()) > 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_sequences_restarts_serial_and_identity_columns(
    db: psycopg.Connection[Any], strategy: clean.Strategy
) -> None:
    clean.clean_connection(db, _settings(strategy=strategy, reset_sequences=True))
    new_employee = db.execute("INSERT INTO employees (name) VALUES ('new') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.accounts VALUES ('eu', 1)")
    new_item = db.execute(
        """INSERT INTO "Order Items" (region, account, currency) VALUES ('eu', 1, 'EUR') RETURNING id"""
    ).fetchone()
    new_truck = db.execute("INSERT INTO trucks (payload) VALUES (1) RETURNING id").fetchone()
    assert (new_employee, new_item, new_truck) == ((1,), (1,), (1,))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reset_without_reset_sequences_keeps_them_going(
    db: psycopg.Connection[Any], strategy: clean.Strategy
) -> None:
    clean.clean_connection(db, _settings(strategy=strategy))
    new_employee = db.execute("INSERT INTO employees (name) VALUES ('new') RETURNING id").fetchone()
    assert new_employee == (5,)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_second_reset_finds_nothing_to_do(db: psycopg.Connection[Any], strategy: clean.Strategy) -> None:
    clean.clean_connection(db, _settings(strategy=strategy))
    report = clean.clean_connection(db, _settings(strategy=strategy))
    assert (report.tables, report.rows, report.emptied) == (0, 0, ())


def test_reset_empties_only_the_tables_holding_rows(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings(strategy="delete"))
    db.execute("INSERT INTO employees (name) VALUES ('x')")
    db.execute("INSERT INTO events VALUES (7, '2025-02-02')")
    report = clean.clean_connection(db, _settings(strategy="delete"))
    assert sorted(report.emptied) == ["public.employees", "public.events"]
    assert report.rows == 2


def test_truncate_strategy_reports_what_it_truncated(db: psycopg.Connection[Any]) -> None:
    report = clean.clean_connection(db, _settings(strategy="truncate"))
    assert sorted(report.truncated) == sorted(CLEANED)


def test_auto_deletes_tables_holding_few_rows(db: psycopg.Connection[Any]) -> None:
    report = clean.clean_connection(db, _settings(strategy="auto"))
    assert report.truncated == ()


def test_auto_truncates_a_big_table_and_deletes_the_rest(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO audit_log (message) SELECT 'm' || g FROM generate_series(1, 10000) g")
    plan = clean.load_plan(db, KEEP)
    assert plan.caps[clean.Table("public", "audit_log")] <= 10000  # 1000 (fsync off) or 8000
    report = clean.reset(db, plan, "auto")
    assert report.truncated == ("public.audit_log",)
    assert not report.rows_exact
    assert sum(_every_table_row_counts(db).values()) == 3


def test_auto_truncates_a_table_holding_more_rows_than_its_cap(db: psycopg.Connection[Any]) -> None:
    plan = clean.load_plan(db, KEEP)
    cheap_truncate = dataclasses.replace(plan, truncate_us=0.001)  # every cap becomes 1 row
    report = clean.reset(db, cheap_truncate, "auto")
    assert sorted(report.truncated) == sorted(CLEANED)
    assert sum(_every_table_row_counts(db).values()) == 3  # the kept rows


def test_cycle_cannot_be_emptied_by_separate_deletes(db: psycopg.Connection[Any]) -> None:
    """The control for the cycle handling: one DELETE per table, in any order, fails."""
    for first in ("authors", "books"):
        with pytest.raises(psycopg.errors.IntegrityError):
            db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(first)))


def test_plan_is_read_once_per_database(db: psycopg.Connection[Any]) -> None:
    clean.plan_cache.invalidate(db)
    first = clean.plan_cache.get(db, KEEP)
    clean.clean_connection(db, _settings())
    assert clean.plan_cache.get(db, KEEP) is first


def test_a_temporary_table_does_not_make_the_plan_reload(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings())
    first = clean.plan_cache.get(db, KEEP)
    db.execute("CREATE TEMP TABLE scratch (id int PRIMARY KEY)")  # what an app may do in a test
    db.execute("INSERT INTO employees (id, name) VALUES (100, 'x')")
    clean.clean_connection(db, _settings())
    assert clean.plan_cache.get(db, KEEP) is first
    assert _rows(db, "employees") == 0


def test_table_created_after_the_plan_is_still_emptied(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings())
    db.execute("CREATE TABLE late (id int PRIMARY KEY, employee_id int REFERENCES employees)")
    db.execute("INSERT INTO employees (id, name) VALUES (100, 'x')")
    db.execute("INSERT INTO late VALUES (1, 100)")
    report = clean.clean_connection(db, _settings())
    assert sorted(report.emptied) == ["public.employees", "public.late"]
    assert _rows(db, "late") == 0


def test_dropped_table_makes_the_plan_reload(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings())
    db.execute("DROP TABLE audit_log")
    db.execute("INSERT INTO employees (name) VALUES ('x')")
    report = clean.clean_connection(db, _settings())
    assert report.emptied == ("public.employees",)


def test_do_block_fallback_empties_every_table(db: psycopg.Connection[Any]) -> None:
    clean.Cleaner.of(db).use_temp = False  # as when the role may not create temporary functions
    report = clean.clean_connection(db, _settings(strategy="auto"))
    assert sorted(report.emptied) == sorted(CLEANED)
    assert sum(_every_table_row_counts(db).values()) == 3


def test_reset_function_discarded_from_the_session_is_created_again(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings())
    db.execute("DISCARD TEMP")
    db.execute("INSERT INTO employees (name) VALUES ('x')")
    report = clean.clean_connection(db, _settings())
    assert report.emptied == ("public.employees",)


def test_reset_leaves_the_session_settings_as_they_were(db: psycopg.Connection[Any]) -> None:
    before = db.execute(
        "SELECT current_setting('lock_timeout'), current_setting('synchronous_commit')"
    ).fetchone()
    clean.clean_connection(db, _settings(lock_timeout=0.5))
    after = db.execute(
        "SELECT current_setting('lock_timeout'), current_setting('synchronous_commit')"
    ).fetchone()
    assert after == before


def test_clean_database_connects_by_url(db: psycopg.Connection[Any], scratch_url: str) -> None:
    report = clean.clean_database(scratch_url, _settings())
    assert sorted(report.emptied) == sorted(CLEANED)


def test_kept_table_referencing_a_cleaned_row_fails_without_deleting_anything(
    db: psycopg.Connection[Any],
) -> None:
    db.execute("CREATE TABLE pinned (employee_id int NOT NULL REFERENCES employees)")
    db.execute("INSERT INTO pinned VALUES (1)")
    before = _every_table_row_counts(db)
    with pytest.raises(CleanError, match="employees"):
        clean.clean_connection(db, CleanSettings(keep=[*KEEP, "pinned"], strategy="truncate"))
    assert _every_table_row_counts(db) == before


def test_connection_without_autocommit_is_left_idle(db: psycopg.Connection[Any], scratch_url: str) -> None:
    with psycopg.connect(scratch_url) as conn:
        report = clean.clean_connection(conn, _settings())
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert sorted(report.emptied) == sorted(CLEANED)
    assert sum(_every_table_row_counts(db).values()) == 3


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_database_without_tables_has_nothing_to_clean(scratch_url: str, strategy: clean.Strategy) -> None:
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW v AS SELECT 1 AS one")
        report = clean.clean_connection(conn, CleanSettings(strategy=strategy, reset_sequences=True))
    assert (report.tables, report.rows) == (0, 0)


def test_open_transaction_on_the_connection_is_refused(scratch_url: str) -> None:
    with psycopg.connect(scratch_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(CleanError, match="open transaction"):
            clean.clean_connection(conn, _settings())


# --- lock timeouts --------------------------------------------------------------------------


@pytest.fixture
def holder(scratch_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A second session that keeps its transaction open."""
    with psycopg.connect(scratch_url, application_name="lock-holder") as conn:
        yield conn
        conn.rollback()


def test_truncate_behind_an_open_reader_times_out_naming_the_holder(
    db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    holder.execute("SELECT count(*) FROM employees")  # ACCESS SHARE until the transaction ends
    started = time.monotonic()
    with pytest.raises(CleanError) as caught:
        clean.clean_connection(db, _settings(strategy="truncate", lock_timeout=0.5))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "timed out after 0.5s" in message
    assert f"pid {holder.info.backend_pid}" in message
    assert "lock-holder" in message
    assert "idle in transaction" in message
    assert "employees" in message


def test_delete_behind_a_row_lock_times_out_naming_the_table_and_holder(
    db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    clean.clean_connection(db, _settings(strategy="delete", reset_sequences=True))
    db.execute(FILL)  # the reset function now exists in the session: the lock is found all the same
    holder.execute("SELECT * FROM ONLY vehicles FOR UPDATE")
    started = time.monotonic()
    with pytest.raises(CleanError) as caught:
        clean.clean_connection(db, _settings(strategy="delete", lock_timeout=0.5))
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "waiting for a lock on public.vehicles" in message
    assert f"held by pid {holder.info.backend_pid}" in message


def test_failed_reset_leaves_every_row_in_place(
    db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    holder.execute("SELECT * FROM employees WHERE id = 1 FOR UPDATE")
    before = _every_table_row_counts(db)
    with pytest.raises(CleanError):
        clean.clean_connection(db, _settings(strategy="delete", lock_timeout=0.3, reset_sequences=True))
    assert _every_table_row_counts(db) == before
    assert db.execute("SELECT nextval('employees_id_seq')").fetchone() == (5,)


def test_delete_is_not_blocked_by_an_open_reader(
    db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    holder.execute("SELECT count(*) FROM employees")
    report = clean.clean_connection(db, _settings(strategy="delete", lock_timeout=0.5))
    assert "public.employees" in report.emptied


def test_auto_deletes_instead_when_a_truncate_would_wait(
    db: psycopg.Connection[Any], holder: psycopg.Connection[Any]
) -> None:
    holder.execute("SELECT count(*) FROM audit_log")
    plan = dataclasses.replace(clean.load_plan(db, KEEP), truncate_us=0.001)
    report = clean.reset(db, plan, "auto", lock_timeout=2.0)
    assert "public.audit_log" in report.emptied
    assert "public.audit_log" not in report.truncated
    assert _rows(db, "audit_log") == 0


# --- skipping foreign-key checks after a heavy reset ----------------------------------------


def _superuser(conn: psycopg.Connection[Any]) -> bool:
    return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)


def test_reset_after_a_heavy_one_skips_foreign_key_checks(db: psycopg.Connection[Any]) -> None:
    if not _superuser(db):
        pytest.skip("needs a role that may SET session_replication_role")
    heavy = "INSERT INTO employees (name) SELECT 'e' || g FROM generate_series(1, 2000) g"
    db.execute(heavy)
    first = clean.clean_connection(db, _settings(strategy="delete"))
    db.execute(heavy)
    second = clean.clean_connection(db, _settings(strategy="delete"))
    assert (first.fk_checks_skipped, second.fk_checks_skipped) == (False, True)
    assert sum(_every_table_row_counts(db).values()) == 3  # the kept rows


def test_light_resets_keep_foreign_key_checks(db: psycopg.Connection[Any]) -> None:
    clean.clean_connection(db, _settings(reset_sequences=True))
    db.execute(FILL)
    assert not clean.clean_connection(db, _settings()).fk_checks_skipped


def test_foreign_keys_are_enforced_again_after_a_reset_that_skipped_them(db: psycopg.Connection[Any]) -> None:
    plan = clean.load_plan(db, KEEP)
    report = clean.reset(db, plan, "delete", skip_fk_checks=True)
    assert report.fk_checks_skipped == plan.fk_checks_skippable
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute("INSERT INTO books VALUES (1, 999)")


def test_foreign_key_checks_always_run_when_a_kept_table_references_a_cleaned_one(
    db: psycopg.Connection[Any],
) -> None:
    db.execute("CREATE TABLE pinned (employee_id int NOT NULL REFERENCES employees)")
    plan = clean.load_plan(db, [*KEEP, "pinned"])
    assert not plan.fk_checks_skippable
    assert not clean.reset(db, plan, "delete", skip_fk_checks=True).fk_checks_skipped
