"""Empty every table of a database between tests, in one round trip.

Three parts:

* :func:`load_plan` reads the live catalog with ONE query (tables, foreign keys, owned
  sequences) and orders the tables so that referencing tables are emptied before the
  tables they reference (:func:`order_steps`). Plans are cached per database by
  :data:`plan_cache`, so the catalog is read once per schema, not once per reset.
* :func:`reset` empties the tables that hold rows, in that order, with one call of a
  generated PL/pgSQL function. The function is created as a session-temporary function
  (``pg_temp.testdb_clean_<fingerprint>_<strategy>``) on the first reset of a connection,
  in the same round trip as that first call; later resets on the connection only call it.
  PL/pgSQL caches the plans of a function's statements for the life of the session, so a
  reset of 300 tables runs 300 already-planned ``SELECT … LIMIT 1`` probes: measured on
  this machine (PostgreSQL 15, 300 tables) ~4-7 ms per call, against ~30-40 ms for the
  same code sent as an anonymous ``DO`` block, which PostgreSQL compiles and plans from
  scratch on every call. ``DO`` remains the fallback when the session may not create
  temporary objects (no TEMP privilege, read-only transaction).
* :func:`clean_database` / :func:`clean_connection` tie both to :class:`CleanSettings`;
  the CLI (``testdb clean``) and the pytest plugin's cleanup fixture call them.

Every identifier is composed with :mod:`psycopg.sql`; no table name is ever formatted
into SQL as plain text.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import math
import re
import threading
import time
import weakref
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from testdb.config import CleanSettings
from testdb.errors import CleanError
from testdb.servers.base import connect, scrub

__all__ = [
    "CleanPlan",
    "CleanReport",
    "PlanCache",
    "Strategy",
    "Table",
    "clean_connection",
    "clean_database",
    "load_plan",
    "make_plan",
    "order_steps",
    "plan_cache",
    "reset",
]

Strategy = Literal["delete", "truncate", "auto"]
STRATEGIES: tuple[str, ...] = ("delete", "truncate", "auto")
N = TypeVar("N", bound=Hashable)

# --- the cost model behind strategy "auto" -------------------------------------------
# Measured with bench/clean.py and a per-operation probe on this machine (2 vCPUs,
# PostgreSQL 15 with fsync=on, embedded PostgreSQL 18 with fsync=off):
#   * DELETE costs ~5 us per row, plus ~25 us per row for EACH foreign key that references
#     the table (PostgreSQL runs one RI check query per deleted row and constraint);
#   * TRUNCATE costs per table, whatever its rows: it swaps in new, empty files for the
#     table, its TOAST table and every index: ~1 ms per table with fsync=off but 15-25 ms
#     with fsync=on (a TRUNCATE of the 300-table benchmark schema takes seconds there, a
#     DELETE of its 30 000 rows about one second).
# So TRUNCATE only pays for a table holding many rows, and a TRUNCATE must also name every
# table that references it (transitively): table t is truncated when its row count reaches
#   cap(t) = |referencers*(t)| * TRUNCATE_US / (DELETE_ROW_US + refs(t) * RI_CHECK_US).
# E.g. with fsync=on a leaf table needs >= 4000 rows and a table referenced by 2 leaves
# ~1100; with fsync=off 200 and ~55. Rows are counted only up to cap(t), so the decision
# never costs more than the DELETE it avoids, and it stays inside the same round trip.
DELETE_ROW_US = 5.0
RI_CHECK_US = 25.0
TRUNCATE_US = {"on": 20_000.0, "off": 1_000.0}
MAX_CAP = 10_000_000
AUTO_TRUNCATE_LOCK_MS = 200  # auto tries TRUNCATE this long, then DELETEs instead
TRUNCATE_COUNT_CAP = 1000  # strategy "truncate" counts rows (for the report) up to this

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
_PLPGSQL_LINE = re.compile(r"PL/pgSQL function [^\n]*? line (\d+)")
_STALE_SQLSTATES = ("42P01", "42703", "42704", "3F000")  # undefined table/column/object/schema


# --- tables and the plan ----------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Table:
    """A user table (a partitioned table stands for all its partitions)."""

    schema: str
    name: str
    partitioned: bool = field(default=False, compare=False)

    @property
    def qualified(self) -> sql.Identifier:
        """``"schema"."name"``, safe to compose into SQL."""
        return sql.Identifier(self.schema, self.name)

    @property
    def relation(self) -> sql.Composable:
        """How DELETE / SELECT / TRUNCATE name the table.

        ``ONLY`` for ordinary tables, so that an inheritance parent does not reach into its
        children (they are tables of their own in the plan); never for a partitioned table,
        whose rows all live in its partitions.
        """
        if self.partitioned:
            return self.qualified
        return sql.SQL("ONLY {}").format(self.qualified)

    @property
    def display(self) -> str:
        """``schema.name`` for messages, each part quoted only when it needs to be."""
        return ".".join(
            part if _PLAIN_NAME.fullmatch(part) else '"' + part.replace('"', '""') + '"'
            for part in (self.schema, self.name)
        )

    def matches(self, entry: str) -> bool:
        """True if a ``clean.keep`` entry (``name`` or ``schema.name``) names this table."""
        return entry in (self.name, f"{self.schema}.{self.name}")

    def __str__(self) -> str:
        return self.display


def order_steps(nodes: Sequence[N], edges: Iterable[tuple[N, N]]) -> tuple[tuple[N, ...], ...]:
    """Order ``nodes`` so that for every edge ``(child, parent)`` child comes first.

    An edge means "child references parent": child's rows must go before parent's. The
    result is a sequence of steps; a step of more than one node is a strongly connected
    component (a reference cycle), whose members must be emptied together, in one
    statement. A self-reference does not make a step bigger. Deterministic: steps that are
    ready together, and the members of a step, keep the order of ``nodes``.

    ``graphlib.TopologicalSorter`` alone cannot do this: on any cycle, a self-reference
    included, it raises ``CycleError`` naming one cycle, and it has no notion of which
    nodes belong together. So the cycles are collapsed first (Tarjan's algorithm,
    iterative so deep chains cannot hit the recursion limit) and graphlib sorts the
    resulting acyclic graph of components.
    """
    position = {node: i for i, node in enumerate(nodes)}
    successors: dict[N, list[N]] = {node: [] for node in nodes}
    pairs: list[tuple[N, N]] = []
    for child, parent in edges:
        if child not in position or parent not in position:
            raise ValueError(f"edge {child!r} -> {parent!r} names a node that is not listed")
        successors[child].append(parent)
        pairs.append((child, parent))

    components = _strongly_connected(nodes, successors)
    component_of = {node: ci for ci, members in enumerate(components) for node in members}
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for ci in range(len(components)):
        sorter.add(ci)
    for child, parent in pairs:
        if component_of[child] != component_of[parent]:
            sorter.add(component_of[parent], component_of[child])  # parent after child
    sorter.prepare()
    steps: list[tuple[N, ...]] = []
    first = [min(position[n] for n in members) for members in components]
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=first.__getitem__)
        for ci in ready:
            steps.append(tuple(sorted(components[ci], key=position.__getitem__)))
        sorter.done(*ready)
    return tuple(steps)


def _strongly_connected(nodes: Sequence[N], successors: Mapping[N, list[N]]) -> list[list[N]]:
    """Tarjan's strongly connected components, without recursion."""
    index: dict[N, int] = {}
    low: dict[N, int] = {}
    stack: list[N] = []
    on_stack: set[N] = set()
    result: list[list[N]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(successors[root]))]
        while work:
            node, pending = work[-1]
            for nxt in pending:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(successors[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    caller = work[-1][0]
                    low[caller] = min(low[caller], low[node])
                if low[node] == index[node]:
                    members: list[N] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    result.append(members)
    return result


@dataclass(frozen=True)
class CleanPlan:
    """How to empty one database: which tables, in which order, and what else to reset.

    ``steps`` lists referencing tables before the tables they reference; a step of more
    than one table is a reference cycle, emptied in a single statement. ``edges`` are the
    foreign keys between cleaned tables as (referencing, referenced). ``references`` counts
    the foreign-key constraints pointing at each table (each costs one check per deleted
    row). ``external`` are cleaned tables that a table outside the plan (a kept or
    extension-owned table) references: they can never be truncated. ``mark`` is the
    catalog state the plan was read at (checked by every reset, see :class:`PlanCache`).
    """

    steps: tuple[tuple[Table, ...], ...]
    edges: tuple[tuple[Table, Table], ...] = ()
    sequences: Mapping[Table, tuple[int, ...]] = field(default_factory=dict, compare=False)
    references: Mapping[Table, int] = field(default_factory=dict, compare=False)
    external: frozenset[Table] = frozenset()
    kept: tuple[Table, ...] = ()
    keep: tuple[str, ...] = ()
    oids: Mapping[Table, int] = field(default_factory=dict, compare=False)
    truncate_us: float = TRUNCATE_US["on"]
    mark: str = ""

    @cached_property
    def tables(self) -> tuple[Table, ...]:
        """Every cleaned table, in emptying order."""
        return tuple(t for step in self.steps for t in step)

    @cached_property
    def position(self) -> dict[Table, int]:
        """1-based position of each table in :attr:`tables` (the index the SQL reports)."""
        return {t: i for i, t in enumerate(self.tables, start=1)}

    @cached_property
    def referencers(self) -> dict[Table, tuple[Table, ...]]:
        """Each table with every table that references it, transitively (itself included):
        what a TRUNCATE of the table must also name. All of them come no later than the
        table in :attr:`tables`."""
        direct: dict[Table, set[Table]] = {t: set() for t in self.tables}
        for child, parent in self.edges:
            direct[parent].add(child)
        result: dict[Table, tuple[Table, ...]] = {}
        for table in self.tables:
            seen = {table}
            todo = [table]
            while todo:
                for child in direct[todo.pop()]:
                    if child not in seen:
                        seen.add(child)
                        todo.append(child)
            result[table] = tuple(sorted(seen, key=self.position.__getitem__))
        return result

    @cached_property
    def truncatable(self) -> frozenset[Table]:
        """Tables a TRUNCATE may empty: those no table outside the plan depends on."""
        return frozenset(t for t in self.tables if not self.external.intersection(self.referencers[t]))

    @cached_property
    def caps(self) -> dict[Table, int]:
        """Row count from which strategy "auto" truncates a table (see the cost model)."""
        caps: dict[Table, int] = {}
        for table in self.tables:
            per_row = DELETE_ROW_US + self.references.get(table, 0) * RI_CHECK_US
            cap = math.ceil(len(self.referencers[table]) * self.truncate_us / per_row)
            caps[table] = max(1, min(cap, MAX_CAP))
        return caps

    @cached_property
    def fingerprint(self) -> str:
        """A hash of everything the generated SQL depends on (names the temp function)."""
        data = [
            [[[t.schema, t.name, t.partitioned] for t in step] for step in self.steps],
            [[c.display, p.display] for c, p in self.edges],
            sorted([t.display, list(s)] for t, s in self.sequences.items()),
            sorted([t.display, n] for t, n in self.references.items()),
            sorted(t.display for t in self.external),
            self.truncate_us,
        ]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:20]


def make_plan(
    tables: Sequence[Table],
    edges: Iterable[tuple[Table, Table]],
    *,
    keep: Sequence[str] = (),
    sequences: Mapping[Table, Sequence[int]] | None = None,
    oids: Mapping[Table, int] | None = None,
    truncate_us: float = TRUNCATE_US["on"],
    mark: str = "",
) -> CleanPlan:
    """Build a plan from tables and foreign keys ``(referencing, referenced)``.

    Tables matching ``keep`` are left out; a foreign key from a table outside the plan
    (kept, or not listed at all) to a cleaned table marks that table ``external``.
    ``edges`` may repeat a pair (one per constraint): each repeat counts as a reference.
    """
    kept = tuple(t for t in tables if any(t.matches(entry) for entry in keep))
    cleaned = [t for t in tables if t not in kept]
    members = set(cleaned)
    inner: list[tuple[Table, Table]] = []
    references: dict[Table, int] = {}
    external: set[Table] = set()
    for child, parent in edges:
        if parent not in members:
            continue  # a cleaned child of a kept table: nothing to order
        references[parent] = references.get(parent, 0) + 1
        if child in members:
            inner.append((child, parent))
        else:
            external.add(parent)
    unique_edges = tuple(dict.fromkeys(inner))
    return CleanPlan(
        steps=order_steps(cleaned, unique_edges),
        edges=unique_edges,
        sequences={t: tuple(s) for t, s in (sequences or {}).items() if t in members and s},
        references=references,
        external=frozenset(external),
        kept=kept,
        keep=tuple(keep),
        oids=dict(oids or {}),
        truncate_us=truncate_us,
        mark=mark,
    )


# One query: every user table, every foreign key, every owned sequence, the catalog mark.
# Partitions are left out (their partitioned root stands for them) and foreign keys are
# taken at the root (conparentid = 0: the copies PostgreSQL makes on each partition are
# skipped) and mapped to partition roots, so a key declared on or pointing at a single
# partition still orders its root. Inheritance children are tables of their own. Tables
# that belong to an extension (pg_depend 'e') are never cleaned, but keys from them count.
_CATALOG_QUERY = sql.SQL("""
WITH rels AS (
    SELECT c.oid::bigint AS oid, n.nspname AS schema_name, c.relname, c.relkind = 'p' AS partitioned,
           EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                     AND d.objid = c.oid AND d.deptype = 'e') AS extension
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
), fks AS (
    SELECT coalesce(pg_catalog.pg_partition_root(k.conrelid), k.conrelid)::oid::bigint AS child,
           coalesce(pg_catalog.pg_partition_root(k.confrelid), k.confrelid)::oid::bigint AS parent
    FROM pg_catalog.pg_constraint AS k
    WHERE k.contype = 'f' AND k.conparentid = 0
), seqs AS (
    SELECT d.refobjid::bigint AS owner, d.objid::bigint AS seq
    FROM pg_catalog.pg_depend AS d
    JOIN pg_catalog.pg_class AS s ON s.oid = d.objid AND s.relkind = 'S'
    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      AND d.deptype IN ('a', 'i')
)
SELECT
    (SELECT coalesce(json_agg(json_build_array(oid, schema_name, relname, partitioned, extension)
                              ORDER BY schema_name, relname), '[]') FROM rels),
    (SELECT coalesce(json_agg(json_build_array(child, parent)), '[]') FROM fks),
    (SELECT coalesce(json_agg(json_build_array(owner, seq)), '[]') FROM seqs),
    (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_class)::text || ':'
        || (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_constraint)::text,
    pg_catalog.current_setting('fsync')
""")


def load_plan(conn: psycopg.Connection[Any], keep: Sequence[str] = ("alembic_version",)) -> CleanPlan:
    """Read the catalog of ``conn``'s database (one query) and order its tables."""
    _check_idle(conn)
    try:
        row = conn.execute(_CATALOG_QUERY).fetchone()
    except psycopg.Error as exc:
        raise CleanError(f"cannot read the tables of {conn.info.dbname}: {_one_line(exc)}") from None
    finally:
        _end_transaction(conn)
    assert row is not None
    rels, fks, seqs, mark, fsync = row
    by_oid: dict[int, Table] = {}
    tables: list[Table] = []
    outside: set[Table] = set()
    for oid, schema, name, partitioned, extension in rels:
        table = Table(schema, name, partitioned)
        by_oid[oid] = table
        if extension:
            outside.add(table)  # never cleaned, but its foreign keys count
        else:
            tables.append(table)
    edges = [(by_oid[c], by_oid[p]) for c, p in fks if c in by_oid and p in by_oid]
    owned: dict[Table, list[int]] = {}
    for owner, seq in seqs:
        if owner in by_oid:
            owned.setdefault(by_oid[owner], []).append(seq)
    return make_plan(
        tables,
        edges,
        keep=keep,
        sequences={t: sorted(s) for t, s in owned.items()},
        oids={t: o for o, t in by_oid.items()},
        truncate_us=TRUNCATE_US.get(str(fsync), TRUNCATE_US["on"]),
        mark=str(mark),
    )


class PlanCache:
    """Plans by database, validated on every reset at no extra round trip.

    The key is the database's identity (server host and port, database, user, keep list),
    not a catalog fingerprint: computing any fingerprint before each reset would cost a
    round trip of its own. Instead the plan carries a catalog *mark* -- the highest OID in
    ``pg_class`` and in ``pg_constraint`` -- and the reset function compares it with the
    live catalog as its first statement (two index-only lookups, a few microseconds). A new
    table, index, sequence or foreign key gets a higher OID, so the reset sees that the plan
    is stale, returns without touching anything, and :func:`reset` reloads the plan and
    retries. Dropped or renamed tables make the cached statements fail with "does not
    exist", which also triggers a reload. (Only after a wrap-around of the 32-bit OID
    counter could a new object get a lower OID; ``invalidate`` is there for that.)
    """

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], CleanPlan] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(conn: psycopg.Connection[Any], keep: Sequence[str]) -> tuple[Any, ...]:
        info = conn.info
        return (info.host, info.port, info.dbname, info.user, tuple(keep))

    def get(self, conn: psycopg.Connection[Any], keep: Sequence[str]) -> CleanPlan:
        """The cached plan for ``conn``'s database, loading it on first use."""
        key = self.key(conn, keep)
        with self._lock:
            plan = self._plans.get(key)
        if plan is None:
            plan = self.reload(conn, keep)
        return plan

    def reload(self, conn: psycopg.Connection[Any], keep: Sequence[str]) -> CleanPlan:
        """Read the plan from the catalog again and cache it."""
        plan = load_plan(conn, keep)
        with self._lock:
            self._plans[self.key(conn, keep)] = plan
        return plan

    def invalidate(self, conn: psycopg.Connection[Any] | None = None) -> None:
        """Forget the plans of ``conn``'s database, or every plan."""
        with self._lock:
            if conn is None:
                self._plans.clear()
                return
            prefix = self.key(conn, ())[:4]
            for key in [k for k in self._plans if k[:4] == prefix]:
                del self._plans[key]


plan_cache = PlanCache()


# --- the reset ----------------------------------------------------------------------------


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

    def summary(self) -> str:
        """One line for humans, e.g. ``emptied 5 tables (42 rows) in 3.1 ms``."""
        rows = f"{self.rows}{'' if self.rows_exact else '+'} rows"
        return f"emptied {self.tables} tables ({rows}) in {self.seconds * 1000:.1f} ms"


@dataclass(frozen=True)
class _Stale:
    reason: str


@dataclass
class _Rendered:
    text: str
    lines: list[tuple[int, tuple[Table, ...]]]  # (first line, tables) of each step's code


# Session-temporary functions already created on each connection.
_created: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[str]] = weakref.WeakKeyDictionary()
_no_temp: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()


def reset(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy = "auto",
    reset_sequences: bool = False,
    lock_timeout: float = 5.0,
) -> CleanReport:
    """Empty every table of ``plan`` that holds rows: one round trip, one transaction.

    ``delete`` DELETEs in plan order (cycles in one statement each); ``truncate`` issues
    one TRUNCATE naming the tables that hold rows and every table that references them;
    ``auto`` DELETEs, but TRUNCATEs a table holding more rows than its cap (see the cost
    model above). With ``reset_sequences`` every sequence owned by a cleaned table starts
    again. No lock is waited for longer than ``lock_timeout`` seconds: a
    :class:`CleanError` then names the session holding it.

    A plan that no longer matches the catalog is reloaded (and :data:`plan_cache`
    updated) and the reset retried once.
    """
    if strategy not in STRATEGIES:
        raise CleanError(f"unknown clean strategy {strategy!r}", hint="use delete, truncate or auto")
    if lock_timeout <= 0:
        raise CleanError("clean.lock_timeout must be positive", hint="e.g. lock_timeout = 5.0")
    _check_idle(conn)
    started = time.perf_counter()
    outcome = _run(conn, plan, strategy, reset_sequences, lock_timeout)
    for _retry in range(2):
        if not isinstance(outcome, _Stale):
            break
        plan = plan_cache.reload(conn, plan.keep)
        outcome = _run(conn, plan, strategy, reset_sequences, lock_timeout)
    if isinstance(outcome, _Stale):
        raise CleanError(
            f"cleaning {conn.info.dbname} failed: its tables changed under it three times ({outcome.reason})",
            hint="do not create, drop or rename tables while cleaning",
        )
    tables = plan.tables
    emptied = [tables[i - 1].display for i in outcome["emptied"]]
    truncated = {tables[i - 1].display for i in outcome["truncated"]}
    return CleanReport(
        tables=len(emptied),
        rows=int(sum(outcome["rows"])),
        seconds=time.perf_counter() - started,
        emptied=tuple(emptied),
        strategy=strategy,
        truncated=tuple(t for t in emptied if t in truncated),
        rows_exact=bool(outcome["exact"]),
    )


def _run(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy,
    reset_sequences: bool,
    lock_timeout: float,
) -> dict[str, Any] | _Stale:
    """One round trip: the decoded report, or _Stale if the plan no longer fits the catalog."""
    timeout_ms = max(1, round(lock_timeout * 1000))
    name = f"testdb_clean_{plan.fingerprint}_{strategy}"
    created = _created.setdefault(conn, set())
    use_do = conn in _no_temp
    args = sql.SQL(", ").join([sql.Literal(reset_sequences), sql.Literal(timeout_ms), sql.Literal(plan.mark)])
    call = sql.SQL("SELECT pg_temp.{}({})").format(sql.Identifier(name), args)
    rendered: _Rendered | None = None
    if use_do:
        rendered = _render(conn, plan, strategy, do_args=(reset_sequences, timeout_ms, plan.mark))
        query = sql.SQL("DO {}; SELECT pg_catalog.current_setting('testdb.clean_report')").format(
            sql.Literal(rendered.text)
        )
    elif name in created:
        query = call
    else:
        rendered = _render(conn, plan, strategy)
        query = sql.SQL(
            "CREATE OR REPLACE FUNCTION pg_temp.{}(p_reset boolean, p_lock_timeout_ms integer,"
            " p_mark text) RETURNS text LANGUAGE plpgsql AS {}; {}"
        ).format(sql.Identifier(name), sql.Literal(rendered.text), call)
    try:
        cur = conn.execute(query, prepare=False)
        while cur.nextset():
            pass
        row = cur.fetchone()
    except psycopg.Error as exc:
        _end_transaction(conn)
        return _on_error(conn, plan, strategy, exc, name, rendered, lock_timeout, reset_sequences)
    _end_transaction(conn)
    if not use_do:
        created.add(name)
    assert row is not None
    outcome: dict[str, Any] = json.loads(row[0])
    return _Stale("the catalog changed") if outcome.get("stale") else outcome


def _on_error(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy,
    exc: psycopg.Error,
    name: str,
    rendered: _Rendered | None,
    lock_timeout: float,
    reset_sequences: bool,
) -> dict[str, Any] | _Stale:
    """Turn a failed reset into a retry (_Stale), a fallback, or a CleanError."""
    created = _created.setdefault(conn, set())
    db = conn.info.dbname
    context = exc.diag.context or ""
    if isinstance(exc, pgerrors.UndefinedFunction) and name in created and name in str(exc):
        created.discard(name)  # the temporary function is gone (DISCARD TEMP, new session)
        return _run(conn, plan, strategy, reset_sequences, lock_timeout)
    if (
        isinstance(exc, pgerrors.InsufficientPrivilege | pgerrors.ReadOnlySqlTransaction)
        and "PL/pgSQL" not in context
        and conn not in _no_temp
    ):
        _no_temp.add(conn)  # may not create temporary objects: send DO blocks instead
        return _run(conn, plan, strategy, reset_sequences, lock_timeout)
    if isinstance(exc, pgerrors.LockNotAvailable):
        raise _lock_error(conn, plan, strategy, exc, rendered, lock_timeout) from None
    if exc.sqlstate in _STALE_SQLSTATES:
        return _Stale(_one_line(exc))  # a table or schema was dropped or renamed: reload
    if isinstance(exc, pgerrors.DeadlockDetected):
        raise CleanError(
            f"cleaning {db} was chosen as the victim of a deadlock: {_one_line(exc)}",
            hint="another session was modifying the same tables; retry, or close it first",
        ) from None
    if isinstance(exc, pgerrors.IntegrityError | pgerrors.FeatureNotSupported):
        outside = ", ".join(t.display for t in plan.kept) or "none"
        raise CleanError(
            f"cannot empty {db}: {_one_line(exc)}",
            hint="a table that is not cleaned (kept: " + outside + "; or owned by an extension)"
            " references rows of a cleaned table; clean it too or empty it first",
        ) from None
    raise CleanError(f"cleaning {db} failed: {_one_line(exc)}") from None


def _lock_error(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy,
    exc: psycopg.Error,
    rendered: _Rendered | None,
    lock_timeout: float,
) -> CleanError:
    """Name the session(s) holding locks on the table the reset waited for."""
    db = conn.info.dbname
    waited: tuple[Table, ...] = ()
    lines = _PLPGSQL_LINE.findall(exc.diag.context or "")
    if lines:
        if rendered is None:  # the function was created by an earlier reset: re-render to map
            rendered = _render(conn, plan, strategy)
        line = int(lines[-1])
        for first, tables in rendered.lines:
            if first <= line:
                waited = tables
    holders = _lock_holders(conn, plan)
    candidates = waited or plan.tables
    relevant = [h for h in holders if h[0] in candidates] or holders
    named = list(dict.fromkeys(h[0] for h in relevant)) or list(candidates)
    where = ", ".join(t.display for t in named[:3]) + (
        f" (and {len(named) - 3} more)" if len(named) > 3 else ""
    )
    message = f"cleaning {db} timed out after {lock_timeout:g}s waiting for a lock on {where}"
    if relevant:
        described = "; ".join(
            f"pid {pid} ({app or 'no application_name'}, state: {state}, {mode} on {table.display},"
            f" query: {query})"
            for table, mode, pid, app, state, query in relevant[:5]
        )
        message += f": held by {described}"
        hint = (
            f"end that session's transaction (SELECT pg_terminate_backend({relevant[0][2]}) ends it"
            " for good), close connections between tests, or raise clean.lock_timeout"
        )
    else:
        message += " (the session holding it has released it since)"
        hint = "close connections between tests, or raise clean.lock_timeout"
    return CleanError(message, hint=hint)


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


_Holder = tuple[Table, str, int, str, str, str]  # table, mode, pid, application, state, query


def _lock_holders(conn: psycopg.Connection[Any], plan: CleanPlan) -> list[_Holder]:
    """Other sessions' granted locks on the plan's tables (partitions count as their root)."""
    by_oid = {oid: t for t, oid in plan.oids.items() if t in plan.position}
    try:
        rows = conn.execute(_HOLDERS_QUERY).fetchall()
    except psycopg.Error:
        return []
    finally:
        _end_transaction(conn)
    found = []
    for oid, mode, pid, app, state, query in rows:
        if oid in by_oid:
            found.append((by_oid[oid], str(mode), int(pid), str(app or ""), str(state), str(query)))
    return found


# --- generating the PL/pgSQL ----------------------------------------------------------------

_HEAD = """DECLARE
  {params}v_n bigint;
  v_s bigint[];
  v_any boolean;
  v_big boolean;
  v_done integer[] := '{{}}';
  v_rows bigint[] := '{{}}';
  v_trunc integer[] := '{{}}';
  v_tr integer[] := '{{}}';
  v_exact boolean := true;
BEGIN
  IF (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_class)::text || ':'
     || (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_constraint)::text IS DISTINCT FROM p_mark THEN
    {stale}
  END IF;
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);"""


def _render(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy,
    do_args: tuple[bool, int, str] | None = None,
) -> _Rendered:
    """The PL/pgSQL body of the reset function (or of a DO block, given ``do_args``)."""
    chunks: list[tuple[sql.Composable, tuple[Table, ...]]] = []

    def add(code: sql.Composable, tables: tuple[Table, ...] = ()) -> None:
        chunks.append((code, tables))

    def give(value: sql.Composable) -> sql.Composable:
        if do_args is None:
            return sql.SQL("RETURN {};").format(value)
        return sql.SQL("PERFORM pg_catalog.set_config('testdb.clean_report', {}, true); RETURN;").format(
            value
        )

    params: sql.Composable = sql.SQL("")
    if do_args is not None:
        params = sql.SQL(
            "p_reset boolean := {}; p_lock_timeout_ms integer := {}; p_mark text := {};\n  "
        ).format(*(sql.Literal(a) for a in do_args))
    add(sql.SQL(_HEAD).format(params=params, stale=give(sql.Literal('{"stale": true}'))))

    for code, tables in _Gen(conn, plan).steps(strategy):
        add(code, tables)

    if plan.sequences:
        seqs = sorted({s for t in plan.tables for s in plan.sequences.get(t, ())})
        add(
            sql.SQL(
                "  IF p_reset THEN\n"
                "    PERFORM pg_catalog.setval(s.seqrelid, s.seqstart, false)\n"
                "    FROM pg_catalog.pg_sequence AS s\n"
                "    WHERE s.seqrelid = ANY ({}::pg_catalog.oid[])\n"
                "      AND pg_catalog.pg_sequence_last_value(s.seqrelid) IS NOT NULL;\n"
                "  END IF;"
            ).format(sql.Literal("{" + ",".join(map(str, seqs)) + "}"))
        )
    report = sql.SQL(
        "pg_catalog.json_build_object('emptied', v_done, 'rows', v_rows,"
        " 'truncated', v_trunc, 'exact', v_exact)::text"
    )
    add(sql.SQL("  {}\nEND").format(give(report)))

    texts: list[str] = []
    lines: list[tuple[int, tuple[Table, ...]]] = []
    line = 1
    for code, tables in chunks:
        text = code.as_string(conn)
        if tables:
            lines.append((line, tables))
        texts.append(text)
        line += text.count("\n") + 1
    return _Rendered("\n".join(texts), lines)


class _Gen:
    """PL/pgSQL snippets for one plan.

    Why a cycle needs no special care: PostgreSQL checks NO ACTION and RESTRICT foreign
    keys (and runs CASCADE / SET NULL actions) in AFTER triggers queued until the end of
    the statement, and a statement with data-modifying CTEs --
    ``WITH d1 AS (DELETE FROM ONLY a RETURNING 1), d2 AS (DELETE FROM ONLY b RETURNING 1)
    SELECT …`` -- is ONE statement. So every table of a cycle is emptied by one statement
    and the checks then find no referencing rows: no column is set to NULL, no constraint
    needs to be deferrable. A plain DELETE does the same for a self-reference.
    tests/integration/test_clean.py verifies it on PostgreSQL 15 and 18 for a
    self-reference (RESTRICT), a two-table cycle of NOT NULL, non-deferrable RESTRICT keys
    and a three-table cycle mixing RESTRICT, CASCADE and SET NULL, where DELETEs in any
    order as separate statements fail.
    """

    def __init__(self, conn: psycopg.Connection[Any], plan: CleanPlan) -> None:
        self.conn = conn
        self.plan = plan

    def steps(self, strategy: Strategy) -> list[tuple[sql.Composable, tuple[Table, ...]]]:
        """The code of every step for ``strategy``, with the tables each piece touches."""
        plan = self.plan
        if strategy == "delete":
            return [(self.check_and_delete(step), step) for step in plan.steps]
        if strategy == "auto":
            return [
                (self.auto(step) if step[0] in plan.truncatable else self.check_and_delete(step), step)
                for step in plan.steps
            ]
        first = [step for step in plan.steps if step[0] in plan.truncatable]
        later = [step for step in plan.steps if step[0] not in plan.truncatable]
        return [
            *((self.mark_for_truncate(step), step) for step in first),
            (self.truncate_marked(), plan.tables),
            # Tables that cannot be truncated are DELETEd once the rest is empty.
            *((self.check_and_delete(step), step) for step in later),
        ]

    def _pos(self, table: Table) -> sql.Literal:
        return sql.Literal(self.plan.position[table])

    def _probe(self, step: tuple[Table, ...]) -> list[sql.Composable]:
        """Set FOUND (one table) or v_any (a cycle) if the step holds any row."""
        if len(step) == 1:
            return [sql.SQL("  PERFORM FROM {} LIMIT 1;").format(step[0].relation)]
        code: list[sql.Composable] = [sql.SQL("  v_any := false;")]
        for table in step:
            code.append(sql.SQL("  PERFORM FROM {} LIMIT 1; v_any := v_any OR FOUND;").format(table.relation))
        return code

    def _dirty(self, step: tuple[Table, ...]) -> sql.Composable:
        return sql.SQL("FOUND" if len(step) == 1 else "v_any")

    def delete(self, step: tuple[Table, ...], indent: str = "    ") -> list[sql.Composable]:
        """DELETE the step's tables (one statement) and record what held rows."""
        ind = sql.SQL(indent)
        if len(step) == 1:
            return [
                sql.SQL("{}DELETE FROM {};").format(ind, step[0].relation),
                sql.SQL("{}GET DIAGNOSTICS v_n = ROW_COUNT;").format(ind),
                sql.SQL("{}v_done := v_done || {}; v_rows := v_rows || v_n;").format(ind, self._pos(step[0])),
            ]
        ctes = sql.SQL(", ").join(
            sql.SQL("d{} AS (DELETE FROM {} RETURNING 1)").format(sql.Literal(k), t.relation)
            for k, t in enumerate(step, start=1)
        )
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM d{})").format(sql.Literal(k)) for k in range(1, len(step) + 1)
        )
        code: list[sql.Composable] = [
            sql.SQL("{}WITH {}\n{}SELECT ARRAY[{}] INTO v_s;").format(ind, ctes, ind, counts)
        ]
        for k, table in enumerate(step, start=1):
            code.append(
                sql.SQL(
                    "{}IF v_s[{}] > 0 THEN v_done := v_done || {}; v_rows := v_rows || v_s[{}]; END IF;"
                ).format(ind, sql.Literal(k), self._pos(table), sql.Literal(k))
            )
        return code

    def check_and_delete(self, step: tuple[Table, ...]) -> sql.Composable:
        return sql.SQL("\n").join(
            [
                *self._probe(step),
                sql.SQL("  IF {} THEN").format(self._dirty(step)),
                *self.delete(step),
                sql.SQL("  END IF;"),
            ]
        )

    def _truncate_statement(self, tables: Sequence[Table]) -> sql.Composable:
        return sql.SQL("TRUNCATE {};").format(sql.SQL(", ").join(t.relation for t in tables))

    def auto(self, step: tuple[Table, ...]) -> sql.Composable:
        """Probe; if the step holds rows, count them up to the caps and DELETE or TRUNCATE.

        The TRUNCATE (of the step and everything referencing it, all of it earlier in the
        plan and so already empty) waits at most AUTO_TRUNCATE_LOCK_MS for its ACCESS
        EXCLUSIVE locks; if another session holds one, the step is DELETEd instead (the
        EXCEPTION block's subtransaction, and the restored lock_timeout, cost nothing
        unless a TRUNCATE is attempted).
        """
        plan = self.plan
        closure = sorted({r for t in step for r in plan.referencers[t]}, key=plan.position.__getitem__)
        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM (SELECT FROM {} LIMIT {}) AS s)").format(
                t.relation, sql.Literal(plan.caps[t])
            )
            for t in step
        )
        big = sql.SQL(" OR ").join(
            sql.SQL("v_s[{}] >= {}").format(sql.Literal(k), sql.Literal(plan.caps[t]))
            for k, t in enumerate(step, start=1)
        )
        record_truncated: list[sql.Composable] = []
        for k, table in enumerate(step, start=1):
            record_truncated.append(
                sql.SQL(
                    "      IF v_s[{k}] > 0 THEN v_done := v_done || {i}; v_rows := v_rows || v_s[{k}];"
                    " v_trunc := v_trunc || {i}; END IF;"
                ).format(k=sql.Literal(k), i=self._pos(table))
            )
        return sql.SQL("\n").join(
            [
                *self._probe(step),
                sql.SQL("  IF {} THEN").format(self._dirty(step)),
                sql.SQL("    SELECT ARRAY[{}] INTO v_s;").format(counts),
                sql.SQL("    IF {} THEN").format(big),
                sql.SQL("    BEGIN"),
                sql.SQL(
                    "      PERFORM pg_catalog.set_config('lock_timeout',"
                    " least(p_lock_timeout_ms, {})::text || 'ms', true);"
                ).format(sql.Literal(AUTO_TRUNCATE_LOCK_MS)),
                sql.SQL("      {}").format(self._truncate_statement(closure)),
                sql.SQL(
                    "      PERFORM pg_catalog.set_config('lock_timeout',"
                    " p_lock_timeout_ms::text || 'ms', true);"
                ),
                *record_truncated,
                sql.SQL("      v_exact := false;"),
                sql.SQL("    EXCEPTION WHEN lock_not_available THEN"),
                *self.delete(step, indent="      "),
                sql.SQL("    END;"),
                sql.SQL("    ELSE"),
                *self.delete(step, indent="      "),
                sql.SQL("    END IF;"),
                sql.SQL("  END IF;"),
            ]
        )

    def mark_for_truncate(self, step: tuple[Table, ...]) -> sql.Composable:
        """Strategy truncate, pass 1: note each table holding rows (counted up to a cap)
        and everything that references it."""
        plan = self.plan
        code: list[sql.Composable] = []
        for table in step:
            closure = "{" + ",".join(str(plan.position[r]) for r in plan.referencers[table]) + "}"
            code += [
                sql.SQL("  PERFORM FROM {} LIMIT 1;").format(table.relation),
                sql.SQL("  IF FOUND THEN"),
                sql.SQL("    SELECT count(*) INTO v_n FROM (SELECT FROM {} LIMIT {}) AS s;").format(
                    table.relation, sql.Literal(TRUNCATE_COUNT_CAP)
                ),
                sql.SQL(
                    "    v_done := v_done || {}; v_rows := v_rows || v_n; v_tr := v_tr || {}::integer[];"
                ).format(self._pos(table), sql.Literal(closure)),
                sql.SQL("    IF v_n >= {} THEN v_exact := false; END IF;").format(
                    sql.Literal(TRUNCATE_COUNT_CAP)
                ),
                sql.SQL("  END IF;"),
            ]
        return sql.SQL("\n").join(code)

    def truncate_marked(self) -> sql.Composable:
        """Strategy truncate, pass 2: one TRUNCATE of every marked table."""
        # The relation names go in as one text[] literal whose elements were composed with
        # sql.Identifier; EXECUTE picks the marked ones by position.
        names = [t.relation.as_string(self.conn) for t in self.plan.tables]
        return sql.SQL(
            "  IF cardinality(v_tr) > 0 THEN\n"
            "    EXECUTE 'TRUNCATE ' || (\n"
            "      SELECT pg_catalog.string_agg(({}::pg_catalog.text[])[x], ', ' ORDER BY x)\n"
            "      FROM (SELECT DISTINCT pg_catalog.unnest(v_tr) AS x) AS u);\n"
            "    v_trunc := v_done;\n"
            "  END IF;"
        ).format(sql.Literal(names))


# --- entry points -----------------------------------------------------------------------------


def clean_connection(conn: psycopg.Connection[Any], settings: CleanSettings) -> CleanReport:
    """Empty ``conn``'s database as ``settings`` say, with the cached plan.

    Keep the connection open between resets: the reset function and its query plans live
    in the session, and a new connection costs more than the reset itself.
    """
    plan = plan_cache.get(conn, settings.keep)
    return reset(
        conn,
        plan,
        strategy=settings.strategy,
        reset_sequences=settings.reset_sequences,
        lock_timeout=settings.lock_timeout,
    )


def clean_database(url: URL | str, settings: CleanSettings) -> CleanReport:
    """Connect to the database at ``url``, empty it (see :func:`clean_connection`), disconnect."""
    target = make_url(url) if isinstance(url, str) else url
    conn = connect(target)
    try:
        return clean_connection(conn, settings)
    finally:
        conn.close()


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    """Refuse a connection inside a transaction: cleaning commits, and would commit it too."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise CleanError(
            f"cannot clean {conn.info.dbname} on a connection with an open transaction",
            hint="commit or roll back first, or pass an autocommit connection",
        )


def _end_transaction(conn: psycopg.Connection[Any]) -> None:
    """Leave a non-autocommit connection idle (autocommit ones already are)."""
    if not conn.autocommit and not conn.closed:
        status = conn.info.transaction_status
        if status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        elif status == psycopg.pq.TransactionStatus.INTRANS:
            conn.commit()


def _one_line(exc: BaseException) -> str:
    text = scrub(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
