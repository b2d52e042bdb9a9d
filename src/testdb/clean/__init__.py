"""Empty every table of a database between tests, in one round trip.

The package, by concern:

* :mod:`~testdb.clean.graph` -- :func:`order_steps`: referencing tables before the tables
  they reference; reference cycles become steps emptied by one statement.
* :mod:`~testdb.clean.plan` -- :class:`Table`, :class:`CleanPlan` (tables in order, keys,
  sequences, user triggers and how to keep them from firing) and the cost model of
  strategy ``auto``.
* :mod:`~testdb.clean.catalog` -- :func:`load_plan` reads the live catalog with ONE query;
  :data:`plan_cache` keeps plans per database, validated by every reset at no extra cost.
* :mod:`~testdb.clean.sqlgen` -- the reset as PL/pgSQL: one statement probes every table,
  then only the steps holding rows are emptied, in plan order, in one transaction.
* :mod:`~testdb.clean.cleaner` -- :class:`Cleaner`, one per connection: creates the reset
  function in the session once, calls it, retries on a changed catalog, falls back to a
  ``DO`` block without the TEMP privilege.
* :mod:`~testdb.clean.failures` -- a failed reset becomes one error whose hint names its
  real cause.

:func:`clean_database` / :func:`clean_connection` tie them to :class:`CleanSettings`; the
CLI (``testdb clean``) and the pytest plugin's cleanup fixture call them.
"""

from __future__ import annotations

from typing import Any

import psycopg

from testdb.clean.catalog import PlanCache, load_plan, plan_cache
from testdb.clean.cleaner import Cleaner, CleanReport, ResetOptions
from testdb.clean.graph import order_steps
from testdb.clean.plan import STRATEGIES, CleanPlan, Rights, Strategy, Table, Trigger, make_plan
from testdb.config import CleanSettings
from testdb.servers.base import connect
from testdb.urls import PgUrl, make_url

__all__ = [
    "STRATEGIES",
    "CleanPlan",
    "CleanReport",
    "Cleaner",
    "PlanCache",
    "ResetOptions",
    "Rights",
    "Strategy",
    "Table",
    "Trigger",
    "clean_connection",
    "clean_database",
    "load_plan",
    "make_plan",
    "order_steps",
    "plan_cache",
    "reset",
]


def clean_connection(conn: psycopg.Connection[Any], settings: CleanSettings) -> CleanReport:
    """Empty ``conn``'s database as ``settings`` say, with the cached plan.

    Keep the connection open between resets: the reset function and its query plans live
    in the session, and a new connection costs more than the reset itself.
    """
    return Cleaner.of(conn).clean(settings)


def clean_database(url: PgUrl | str, settings: CleanSettings) -> CleanReport:
    """Connect to the database at ``url``, empty it (see :func:`clean_connection`), disconnect."""
    target = make_url(url) if isinstance(url, str) else url
    conn = connect(target)
    try:
        return clean_connection(conn, settings)
    finally:
        conn.close()


def reset(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy = "auto",
    reset_sequences: bool = False,
    lock_timeout: float = 5.0,
    skip_fk_checks: bool | None = None,
) -> CleanReport:
    """Empty every table of ``plan`` that holds rows (see :meth:`Cleaner.reset`)."""
    options = ResetOptions(strategy, reset_sequences, lock_timeout, skip_fk_checks)
    return Cleaner.of(conn).reset(plan, options)
