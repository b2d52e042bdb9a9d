"""Turning a failed reset into one CleanError whose hint names the real cause.

Causes, each with its own hint: a lock another session holds (named: pid, application,
state, query), a table whose user triggers this role may not keep from firing (the
rights that would do), a user trigger that fired all the same, a table testdb does not
clean that references cleaned rows, a missing privilege, a deadlock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from testdb.clean.connection import end_transaction, one_line
from testdb.clean.plan import CleanPlan, Strategy, Table
from testdb.clean.sqlgen import NO_SKIP_SQLSTATE, Rendered, render
from testdb.errors import CleanError

__all__ = ["Attempt", "explain", "user_function_in"]

_PLPGSQL_LINE = re.compile(r"PL/pgSQL function [^\n]*? line (\d+)")
_FUNCTION = re.compile(r"(?:PL/pgSQL|SQL) function ([^\s(]+)\(")
_OURS = "testdb_clean_"


@dataclass
class Attempt:
    """One reset call: what it ran, so that its failure can be explained."""

    conn: psycopg.Connection[Any]
    plan: CleanPlan
    strategy: Strategy
    lock_timeout: float
    rendered: Rendered | None  # None when the function was created by an earlier reset

    @property
    def database(self) -> str:
        return self.conn.info.dbname

    def tables_at(self, exc: psycopg.Error) -> tuple[Table, ...]:
        """The tables of the step the reset was running when it failed (from the line
        number PostgreSQL reports for the reset function)."""
        lines = _PLPGSQL_LINE.findall(exc.diag.context or "")
        if not lines:
            return ()
        if self.rendered is None:  # created by an earlier reset: render again to map lines
            self.rendered = render(self.conn, self.plan, self.strategy)
        line = int(lines[-1])
        found: tuple[Table, ...] = ()
        for first, tables in self.rendered.lines:
            if first <= line:
                found = tables
        return found


def user_function_in(exc: psycopg.Error) -> str | None:
    """The first user function (not testdb's reset) in the error's context, if any: the
    trigger function that raised, or one it called."""
    for name in _FUNCTION.findall(exc.diag.context or ""):
        if _OURS not in name:
            return str(name)
    return None


def explain(attempt: Attempt, exc: psycopg.Error) -> CleanError:
    """The CleanError for a reset that failed with ``exc`` (nothing was deleted)."""
    db = attempt.database
    if isinstance(exc, pgerrors.LockNotAvailable):
        return lock_error(attempt, exc)
    if exc.sqlstate == NO_SKIP_SQLSTATE:
        return _no_way_to_skip(attempt, exc)
    function = user_function_in(exc)
    if function is not None:
        return _trigger_fired(attempt, exc, function)
    if isinstance(exc, pgerrors.DeadlockDetected):
        return CleanError(
            f"cleaning {db} was chosen as the victim of a deadlock: {one_line(exc)}",
            hint="another session was modifying the same tables; retry, or close it first",
        )
    if isinstance(exc, pgerrors.IntegrityError | pgerrors.FeatureNotSupported):
        outside = ", ".join(t.display for t in attempt.plan.kept) or "none"
        return CleanError(
            f"cannot empty {db}: {one_line(exc)}",
            hint="a table that is not cleaned (kept: " + outside + "; or owned by an extension)"
            " references rows of a cleaned table; clean it too or empty it first",
        )
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        user = attempt.conn.info.user
        return CleanError(
            f"cleaning {db} failed: {one_line(exc)}",
            hint=f"the role {user} needs SELECT and DELETE on every cleaned table (UPDATE on their"
            f" sequences for reset_sequences): GRANT them to {user}, or clean as the tables' owner",
        )
    return CleanError(f"cleaning {db} failed: {one_line(exc)}", hint="run with --debug for details")


def _no_way_to_skip(attempt: Attempt, exc: psycopg.Error) -> CleanError:
    plan = attempt.plan
    tables = [t for t in attempt.tables_at(exc) if plan.skip.get(t, "") is None] or [
        t for t, mode in plan.skip.items() if mode is None
    ]
    table = tables[0]
    names = ", ".join(sorted({g.name for g in plan.triggered[table]}))
    user = attempt.conn.info.user
    return CleanError(
        f"cannot empty {table.display} in {attempt.database} without firing its user triggers ({names})",
        hint=f"let {user} skip them: make it the table's owner, or GRANT SET ON PARAMETER"
        f" session_replication_role TO {user} (PostgreSQL 15+), or GRANT TRUNCATE on the table"
        " and every table referencing it",
    )


def _trigger_fired(attempt: Attempt, exc: psycopg.Error, function: str) -> CleanError:
    # The plan keeps the triggers of cleaned tables from firing, so this one sits on a table
    # testdb does not empty (its trigger functions are the user's to name; the table is not
    # in the error's context, the function is).
    outside = ", ".join(t.display for t in attempt.plan.kept) or "none"
    return CleanError(
        f"cleaning {attempt.database} failed: trigger function {function}() raised: {one_line(exc)}",
        hint="testdb keeps the user triggers of the tables it empties from firing; this one fired"
        f" on a table it does not empty (kept: {outside}), through a foreign key's ON DELETE action:"
        " clean that table too, or drop the action",
    )


def lock_error(attempt: Attempt, exc: psycopg.Error) -> CleanError:
    """Name the session(s) holding locks on the table the reset waited for."""
    plan = attempt.plan
    waited = attempt.tables_at(exc)
    holders = lock_holders(attempt.conn, plan)
    on_waited = [h for h in holders if h.table in waited]
    relevant = on_waited or holders
    if waited and (on_waited or len(waited) <= 3):
        named = list(waited) if len(waited) <= 3 else list(dict.fromkeys(h.table for h in on_waited))
    else:
        named = list(dict.fromkeys(h.table for h in relevant)) or list(waited or plan.tables)
    where = ", ".join(t.display for t in named[:3]) + (
        f" (and {len(named) - 3} more)" if len(named) > 3 else ""
    )
    message = (
        f"cleaning {attempt.database} timed out after {attempt.lock_timeout:g}s waiting for a lock on {where}"
    )
    if not relevant:
        return CleanError(
            message + " (the session holding it has released it since)",
            hint="close connections between tests, or raise clean.lock_timeout",
        )
    described = "; ".join(
        f"pid {h.pid} ({h.application or 'no application_name'}, state: {h.state}, {h.mode} on"
        f" {h.table.display}, query: {h.query})"
        for h in relevant[:5]
    )
    return CleanError(
        f"{message}: held by {described}",
        hint=f"end that session's transaction (SELECT pg_terminate_backend({relevant[0].pid}) ends it"
        " for good), close connections between tests, or raise clean.lock_timeout",
    )


_HOLDERS_QUERY = sql.SQL("""
SELECT coalesce(pg_catalog.pg_partition_root(l.relation), l.relation)::oid::bigint,
       l.mode, a.pid, a.application_name, a.state, left(a.query, 80)
FROM pg_catalog.pg_locks AS l
JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_catalog.pg_database
                    WHERE datname = pg_catalog.current_database())
ORDER BY a.pid, l.relation
""")


class Holder(NamedTuple):
    """Another session's granted lock on a cleaned table."""

    table: Table
    mode: str
    pid: int
    application: str
    state: str
    query: str


def lock_holders(conn: psycopg.Connection[Any], plan: CleanPlan) -> list[Holder]:
    """Other sessions' granted locks on the plan's tables (partitions count as their root).

    A role without pg_read_all_stats sees other roles' state and query as NULL: shown as such.
    """
    by_oid = {oid: t for t, oid in plan.oids.items() if t in plan.position}
    try:
        rows = conn.execute(_HOLDERS_QUERY).fetchall()
    except psycopg.Error:
        return []
    finally:
        end_transaction(conn)
    found = []
    for oid, mode, pid, app, state, query in rows:
        if oid in by_oid:
            text = " ".join(str(query).split())  # one line
            found.append(Holder(by_oid[oid], str(mode), int(pid), str(app or ""), str(state), text))
    return found
