"""Running the reset: one :class:`Cleaner` per connection owns that session's cleaning state."""

from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from testdb.clean.catalog import PlanCache, plan_cache
from testdb.clean.connection import check_idle, end_transaction, one_line
from testdb.clean.failures import Attempt, explain, user_function_in
from testdb.clean.plan import REPLICA_FACTOR, STRATEGIES, CleanPlan, Strategy, Table
from testdb.clean.sqlgen import render
from testdb.config import CleanSettings
from testdb.errors import CleanError

__all__ = ["CleanReport", "Cleaner", "ResetOptions"]

_STALE_SQLSTATES = ("42P01", "42703", "42704", "3F000")  # undefined table/column/object/schema
_MAX_RETRIES = 2


@dataclass(frozen=True)
class CleanReport:
    """What a reset emptied.

    ``tables`` and ``emptied`` count only tables that held rows. ``rows`` is exact for
    tables emptied by DELETE; for a table emptied by TRUNCATE rows are counted only up to
    a cap (``rows_exact`` is then False and ``rows`` a lower bound). ``truncated`` names
    the emptied tables that went by TRUNCATE (the rest went by DELETE).
    """

    tables: int
    rows: int
    seconds: float
    emptied: tuple[str, ...]
    strategy: str
    truncated: tuple[str, ...] = ()
    rows_exact: bool = True
    fk_checks_skipped: bool = False  # ran with session_replication_role = replica

    def summary(self) -> str:
        """One line for humans, e.g. ``emptied 5 tables (42 rows) in 3.1 ms``."""
        rows = f"{self.rows}{'' if self.rows_exact else '+'} rows"
        return f"emptied {self.tables} tables ({rows}) in {self.seconds * 1000:.1f} ms"


@dataclass(frozen=True)
class ResetOptions:
    """How a reset empties its tables (see :meth:`Cleaner.reset`)."""

    strategy: Strategy = "auto"
    reset_sequences: bool = False
    lock_timeout: float = 5.0
    # Skip foreign-key checks (session_replication_role = replica) where the plan allows it:
    # None decides by the last reset's RI work (see plan.py), True whenever allowed, False never.
    skip_fk_checks: bool | None = None

    @classmethod
    def of(cls, settings: CleanSettings) -> ResetOptions:
        return cls(settings.strategy, settings.reset_sequences, settings.lock_timeout)

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise CleanError(f"unknown clean strategy {self.strategy!r}", hint="use delete, truncate or auto")
        if self.lock_timeout <= 0:
            raise CleanError("clean.lock_timeout must be positive", hint="e.g. lock_timeout = 5.0")

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.lock_timeout * 1000))


@dataclass(frozen=True)
class _Stale:
    reason: str


_Outcome = dict[str, Any] | _Stale


class Cleaner:
    """Empties the database of one connection, and remembers what its session holds.

    The reset function is created as a session-temporary function
    (``pg_temp.testdb_clean_<fingerprint>_<strategy>``) in the same round trip as the first
    reset of a connection; later resets only call it, and PL/pgSQL keeps its query plans
    for the life of the session (a 300-table reset runs already-planned statements: ~2-4 ms
    against 30-40 ms for the same code as an anonymous ``DO`` block, planned on every call).
    A ``DO`` block remains the fallback when the role may not create temporary objects.
    Keep the connection open between resets: a first reset costs ~0.1-0.2 s for 300
    tables (compiling and planning).
    """

    def __init__(self, conn: psycopg.Connection[Any], plans: PlanCache = plan_cache) -> None:
        self._conn = weakref.ref(conn)  # the registry below maps conn -> Cleaner: no cycle
        self.plans = plans
        self.created: set[str] = set()  # reset functions that exist in this session
        self.use_temp = True  # False once the role was refused a temporary function
        self._calls: dict[tuple[str, bool, int, str, bool], bytes] = {}
        # RI work (estimated us) of the last reset of each plan and strategy: the next
        # reset skips foreign-key checks when it was worth a replan (see plan.py)
        self._fk_work: dict[str, float] = {}

    @classmethod
    def of(cls, conn: psycopg.Connection[Any]) -> Cleaner:
        """The connection's cleaner (made on first use; it lives as long as the connection)."""
        cleaner = _cleaners.get(conn)
        if cleaner is None:
            cleaner = _cleaners[conn] = cls(conn)
        return cleaner

    @property
    def conn(self) -> psycopg.Connection[Any]:
        conn = self._conn()
        if conn is None:
            raise CleanError("cannot clean through a closed connection", hint="open a new connection")
        return conn

    def clean(self, settings: CleanSettings) -> CleanReport:
        """Empty the database as ``settings`` say, with the cached plan."""
        plan = self.plans.get(self.conn, settings.keep)
        return self.reset(plan, ResetOptions.of(settings))

    def reset(self, plan: CleanPlan, options: ResetOptions) -> CleanReport:
        """Empty every table of ``plan`` that holds rows: one round trip, one transaction.

        ``delete`` DELETEs in plan order (cycles in one statement each); ``truncate`` issues
        one TRUNCATE naming the tables that hold rows and every table that references them;
        ``auto`` DELETEs, but TRUNCATEs a table holding more rows than its cap (see the cost
        model in plan.py). With ``reset_sequences`` every sequence owned by a cleaned table
        starts again. No lock is waited for longer than ``lock_timeout`` seconds. User
        triggers are kept from firing (see plan.py). A plan that no longer matches the
        catalog is reloaded, and the cache updated, before anything is deleted; the reset is
        then retried (at most twice).
        """
        options.check()
        check_idle(self.conn)
        started = time.perf_counter()
        outcome = self._run(plan, options)
        for _retry in range(_MAX_RETRIES):
            if not isinstance(outcome, _Stale):
                break
            plan = self.plans.reload(self.conn, plan.keep)
            outcome = self._run(plan, options)
        if isinstance(outcome, _Stale):
            raise CleanError(
                f"cleaning {self.conn.info.dbname} failed: its tables changed under it three times"
                f" ({outcome.reason})",
                hint="do not create, drop or rename tables while cleaning",
            )
        report = _report(plan, options, outcome, time.perf_counter() - started)
        if plan.fk_checks_skippable:  # else the estimate is never read: skip its work
            self._fk_work[self._work_key(plan, options)] = plan.fk_check_us(_rows_deleted(plan, outcome))
        return report

    @staticmethod
    def _work_key(plan: CleanPlan, options: ResetOptions) -> str:
        return f"{plan.fingerprint}_{options.strategy}"

    def _skip_fk_checks(self, plan: CleanPlan, options: ResetOptions) -> bool:
        """Run this reset with session_replication_role = replica? When allowed, and when the
        last reset of this plan spent far more on RI checks than a replan costs."""
        if not plan.fk_checks_skippable or options.skip_fk_checks is False:
            return False
        if options.skip_fk_checks:
            return True
        return self._fk_work.get(self._work_key(plan, options), 0.0) > REPLICA_FACTOR * plan.replan_us

    def _run(self, plan: CleanPlan, options: ResetOptions) -> _Outcome:
        """One round trip: the decoded report, or _Stale if the plan no longer fits the catalog."""
        conn = self.conn
        name = f"testdb_clean_{plan.fingerprint}_{options.strategy}"
        attempt = Attempt(conn, plan, options.strategy, options.lock_timeout, rendered=None)
        query = self._query(attempt, name, options)
        try:
            cur = conn.execute(query, prepare=False)
            while cur.nextset():
                pass
            row = cur.fetchone()
        except psycopg.Error as exc:
            end_transaction(conn)
            return self._recover(attempt, name, options, exc)
        end_transaction(conn)
        if self.use_temp:
            self.created.add(name)
        assert row is not None
        outcome: dict[str, Any] = json.loads(row[0])
        return _Stale("the catalog changed") if outcome.get("stale") else outcome

    def _query(self, attempt: Attempt, name: str, options: ResetOptions) -> bytes:
        """What to send: a call of the session's function (creating it first if needed),
        or a DO block. Sets ``attempt.rendered`` when it renders the code."""
        conn, plan = attempt.conn, attempt.plan
        replica = self._skip_fk_checks(plan, options)
        if not self.use_temp:
            args = (options.reset_sequences, options.timeout_ms, plan.mark, replica)
            attempt.rendered = render(conn, plan, options.strategy, do_args=args)
            do = sql.SQL("DO {}; SELECT pg_catalog.current_setting('testdb.clean_report')")
            return do.format(sql.Literal(attempt.rendered.text)).as_bytes(conn)
        call = self._call(name, options, plan.mark, replica)
        if name in self.created:
            return call
        attempt.rendered = render(conn, plan, options.strategy)
        create = sql.SQL(
            "CREATE OR REPLACE FUNCTION pg_temp.{}(p_reset boolean, p_lock_timeout_ms integer,"
            " p_mark text, p_replica boolean) RETURNS text LANGUAGE plpgsql AS {}; "
        ).format(sql.Identifier(name), sql.Literal(attempt.rendered.text))
        return create.as_bytes(conn) + call

    def _call(self, name: str, options: ResetOptions, mark: str, replica: bool) -> bytes:
        """``SELECT pg_temp.<name>(…)``, composed once per distinct arguments (it is sent on
        every reset: composing it again would cost more than a tenth of a small reset)."""
        key = (name, options.reset_sequences, options.timeout_ms, mark, replica)
        query = self._calls.get(key)
        if query is None:
            if len(self._calls) > 64:
                self._calls.clear()
            values = (options.reset_sequences, options.timeout_ms, mark, replica)
            args = [sql.Literal(value) for value in values]
            call = sql.SQL("SELECT pg_temp.{}({})").format(sql.Identifier(name), sql.SQL(", ").join(args))
            query = self._calls[key] = call.as_bytes(self.conn)
        return query

    def _recover(self, attempt: Attempt, name: str, options: ResetOptions, exc: psycopg.Error) -> _Outcome:
        """Turn a failed round trip into a retry (_Stale), a fallback, or a CleanError."""
        context = exc.diag.context or ""
        if isinstance(exc, pgerrors.UndefinedFunction) and name in self.created and name in str(exc):
            self.created.discard(name)  # the temporary function is gone (DISCARD TEMP, new session)
            return self._run(attempt.plan, options)
        if (
            isinstance(exc, pgerrors.InsufficientPrivilege | pgerrors.ReadOnlySqlTransaction)
            and "PL/pgSQL" not in context
            and self.use_temp
        ):
            self.use_temp = False  # may not create temporary objects: send DO blocks instead
            return self._run(attempt.plan, options)
        if exc.sqlstate in _STALE_SQLSTATES:
            return _Stale(one_line(exc))  # a table, trigger or schema was dropped or renamed: reload
        if user_function_in(exc) is not None and not isinstance(exc, pgerrors.LockNotAvailable):
            # A user trigger fired although the plan skips them: the triggers may have been
            # enabled or created since the plan was read. Reload once before blaming it.
            fresh = self.plans.reload(self.conn, attempt.plan.keep)
            if fresh.fingerprint != attempt.plan.fingerprint:
                return _Stale(one_line(exc))
        raise explain(attempt, exc) from None


def _rows_deleted(plan: CleanPlan, outcome: dict[str, Any]) -> dict[Table, int]:
    """Rows the reset DELETEd, by table (TRUNCATEd tables ran no RI checks)."""
    truncated = set(outcome["truncated"])
    return {
        plan.tables[i - 1]: int(n)
        for i, n in zip(outcome["emptied"], outcome["rows"], strict=True)
        if i not in truncated
    }


def _report(plan: CleanPlan, options: ResetOptions, outcome: dict[str, Any], seconds: float) -> CleanReport:
    tables = plan.tables
    emptied = [tables[i - 1].display for i in outcome["emptied"]]
    truncated = {tables[i - 1].display for i in outcome["truncated"]}
    return CleanReport(
        tables=len(emptied),
        rows=int(sum(outcome["rows"])),
        seconds=seconds,
        emptied=tuple(emptied),
        strategy=options.strategy,
        truncated=tuple(t for t in emptied if t in truncated),
        rows_exact=bool(outcome["exact"]),
        fk_checks_skipped=bool(outcome.get("replica")),
    )


# Each connection's cleaner, found again by clean_connection(conn, …): the plugin and the
# CLI hand over plain connections. Weak keys: a cleaner goes with its connection.
_cleaners: weakref.WeakKeyDictionary[psycopg.Connection[Any], Cleaner] = weakref.WeakKeyDictionary()
