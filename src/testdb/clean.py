"""Empty every table of a database between tests, in one round trip.

Three parts:

* :func:`load_plan` reads the live catalog with ONE query (tables, foreign keys, owned
  sequences) and orders the tables so that referencing tables are emptied before the
  tables they reference (:func:`order_steps`; reference cycles become steps emptied by one
  statement). :data:`plan_cache` keeps plans per database, so the catalog is read once per
  schema, not once per reset.
* :func:`reset` empties the tables that hold rows with ONE call of a generated PL/pgSQL
  function: one statement probes every table (``EXISTS``), then only the steps holding
  rows are DELETEd (or TRUNCATEd), in plan order, in one transaction. The function is
  created as a session-temporary function (``pg_temp.testdb_clean_<fingerprint>_<strategy>``)
  in the same round trip as the first reset of a connection; later resets only call it.
  PL/pgSQL keeps a function's query plans for the life of the session, so a reset of a
  300-table database runs already-planned statements: measured on this machine
  (PostgreSQL 15) ~2-4 ms per call, against 30-40 ms for the same code sent as an
  anonymous ``DO`` block, which PostgreSQL compiles and plans again on every call. A
  ``DO`` block remains the fallback when the session may not create temporary objects
  (no TEMP privilege). A first reset on a new connection costs ~0.1-0.2 s for 300 tables
  (compiling and planning), so keep the connection open between resets.
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

from testdb.config import CleanSettings
from testdb.errors import CleanError
from testdb.servers.base import connect, scrub
from testdb.urls import PgUrl, make_url

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
# Measured with bench/clean.py and per-operation probes on this machine (2 vCPUs, busy;
# PostgreSQL 15 with fsync=on on disk, embedded PostgreSQL 18 with fsync=off on /dev/shm),
# on the benchmark's schema (each table: primary key, one more index, a TOAST table):
#   * DELETE costs ~5 us per row, plus ~10-25 us per row for EACH foreign key that
#     references the table (PostgreSQL runs one RI query per deleted row and constraint);
#     30 000 rows over 300 tables: ~0.4 s (fsync=off) to ~1.2 s (fsync=on).
#   * TRUNCATE costs per table, whatever its rows: it swaps in new, empty files for the
#     table, its TOAST table and every index. ~3.5 ms per table with fsync=off (300 tables:
#     1.1 s) and 15-75 ms with fsync=on (300 tables: 4-23 s) -- slower than DELETEing 100
#     rows from every table, on both servers.
# So TRUNCATE only pays for a table holding many rows, and a TRUNCATE must also name every
# table that references it (transitively): table t is truncated when its row count reaches
#   cap(t) = |referencers*(t)| * TRUNCATE_US / (DELETE_ROW_US + refs(t) * RI_CHECK_US)
# e.g. with fsync=off 1000 rows for a table nothing references, 600 for one referenced by
# two such tables; with fsync=on 8000 and 4800. (A big table also leaves as many dead rows
# behind a DELETE, which every later scan of it pays for until VACUUM: one more reason.)
# Rows are counted only up to cap(t), so deciding never costs more than the DELETE it
# avoids, and it happens inside the same round trip.
DELETE_ROW_US = 5.0
RI_CHECK_US = 10.0
TRUNCATE_US = {"on": 40_000.0, "off": 5_000.0}
MAX_CAP = 10_000_000
AUTO_TRUNCATE_LOCK_MS = 200  # auto tries TRUNCATE this long, then DELETEs instead
MIN_ROW_BYTES = 28  # a heap row's header and line pointer: no table holds more rows than size / 28
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
    position = {node: i for i, node in enumerate(nodes)}  # the work is done on positions
    successors: list[list[int]] = [[] for _ in nodes]
    pairs: list[tuple[int, int]] = []
    for child, parent in edges:
        if child not in position or parent not in position:
            raise ValueError(f"edge {child!r} -> {parent!r} names a node that is not listed")
        pairs.append((position[child], position[parent]))
        successors[position[child]].append(position[parent])

    components = [sorted(members) for members in _strongly_connected(len(nodes), successors)]
    component_of = [0] * len(nodes)
    for ci, members in enumerate(components):
        for member in members:
            component_of[member] = ci
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for ci in range(len(components)):
        sorter.add(ci)
    for c, p in pairs:
        if component_of[c] != component_of[p]:
            sorter.add(component_of[p], component_of[c])  # the referenced after the referencing
    sorter.prepare()
    steps: list[tuple[N, ...]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda ci: components[ci][0])
        steps.extend(tuple(nodes[i] for i in components[ci]) for ci in ready)
        sorter.done(*ready)
    return tuple(steps)


def _strongly_connected(count: int, successors: Sequence[list[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components of nodes 0..count-1, without recursion."""
    index = [-1] * count
    low = [0] * count
    on_stack = [False] * count
    stack: list[int] = []
    result: list[list[int]] = []
    counter = 0
    for root in range(count):
        if index[root] >= 0:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work = [(root, iter(successors[root]))]
        while work:
            node, pending = work[-1]
            for nxt in pending:
                if index[nxt] < 0:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack[nxt] = True
                    work.append((nxt, iter(successors[nxt])))
                    break
                if on_stack[nxt]:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    caller = work[-1][0]
                    low[caller] = min(low[caller], low[node])
                if low[node] == index[node]:
                    members: list[int] = []
                    while True:
                        member = stack.pop()
                        on_stack[member] = False
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
    is_kept = [any(t.matches(entry) for entry in keep) for t in tables]
    index = {t: i for i, t in enumerate(tables)}  # work on positions: Table hashes are slow
    inner: dict[tuple[int, int], None] = {}
    references = [0] * len(tables)
    external: set[int] = set()
    for child, parent in edges:
        p = index.get(parent)
        if p is None or is_kept[p]:
            continue  # a cleaned child of a kept table: nothing to order
        references[p] += 1
        c = index.get(child)
        if c is None or is_kept[c]:
            external.add(p)
        else:
            inner[(c, p)] = None
    steps = order_steps([i for i in range(len(tables)) if not is_kept[i]], list(inner))
    members = {t for t, k in zip(tables, is_kept, strict=True) if not k}
    return CleanPlan(
        steps=tuple(tuple(tables[i] for i in step) for step in steps),
        edges=tuple((tables[c], tables[p]) for c, p in inner),
        sequences={t: tuple(s) for t, s in (sequences or {}).items() if t in members and s},
        references={tables[i]: n for i, n in enumerate(references) if n},
        external=frozenset(tables[i] for i in external),
        kept=tuple(t for t, k in zip(tables, is_kept, strict=True) if k),
        keep=tuple(keep),
        oids=dict(oids or {}),
        truncate_us=truncate_us,
        mark=mark,
    )


# One query, plain rows (building JSON server-side cost more than the rows' transfer):
#   kind 'r' / 'p'  a table / a partitioned table: oid, schema, name
#   kind 'x'        a table that belongs to an extension: never cleaned, its keys count
#   kind 'f'        a foreign key: referencing oid, referenced oid
#   kind 'S'        an owned sequence (serial or identity): owning table oid, sequence oid
#   kind 'm'        the catalog mark (highest OIDs of pg_class and pg_constraint), fsync
# Partitions are left out (their partitioned root stands for them) and foreign keys are
# taken at the root (conparentid = 0: the copies PostgreSQL makes on each partition are
# skipped) and mapped to partition roots, so a key declared on or pointing at a single
# partition still orders its root. Inheritance children are tables of their own. Views,
# materialized views, foreign tables and other sessions' temporary tables never appear.
_CATALOG_QUERY = sql.SQL(r"""
WITH rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'S') AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
)
SELECT CASE WHEN r.oid IN (SELECT d.objid FROM pg_catalog.pg_depend AS d
                           WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                             AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                             AND d.deptype = 'e')
            THEN 'x' ELSE r.relkind::text END,
       r.oid::bigint, 0::bigint, r.nspname::text, r.relname::text
FROM rels AS r WHERE r.relkind <> 'S'
UNION ALL
SELECT 'f',
       CASE WHEN ch.relispartition THEN pg_catalog.pg_partition_root(k.conrelid)::oid
            ELSE k.conrelid END::bigint,
       CASE WHEN pa.relispartition THEN pg_catalog.pg_partition_root(k.confrelid)::oid
            ELSE k.confrelid END::bigint,
       NULL, NULL
FROM pg_catalog.pg_constraint AS k
JOIN pg_catalog.pg_class AS ch ON ch.oid = k.conrelid
JOIN pg_catalog.pg_class AS pa ON pa.oid = k.confrelid
WHERE k.contype = 'f' AND k.conparentid = 0
UNION ALL
SELECT 'S', d.refobjid::bigint, d.objid::bigint, NULL, NULL
FROM rels AS s
JOIN pg_catalog.pg_depend AS d
  ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = s.oid
WHERE s.relkind = 'S' AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND d.deptype IN ('a', 'i')
UNION ALL
SELECT 'm', (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_class)::bigint,
       (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_constraint)::bigint,
       pg_catalog.current_setting('fsync'), NULL
""")


def load_plan(conn: psycopg.Connection[Any], keep: Sequence[str] = ("alembic_version",)) -> CleanPlan:
    """Read the catalog of ``conn``'s database (one query) and order its tables."""
    _check_idle(conn)
    try:
        rows = conn.execute(_CATALOG_QUERY).fetchall()
    except psycopg.Error as exc:
        raise CleanError(f"cannot read the tables of {conn.info.dbname}: {_one_line(exc)}") from None
    finally:
        _end_transaction(conn)
    by_oid: dict[int, Table] = {}
    tables: list[Table] = []
    edges: list[tuple[int, int]] = []
    owned: dict[int, list[int]] = {}
    mark, fsync = "", "on"
    for kind, a, b, schema, name in rows:
        if kind in ("r", "p", "x"):
            by_oid[a] = Table(schema, name, kind == "p")
            if kind != "x":
                tables.append(by_oid[a])
        elif kind == "f":
            edges.append((a, b))
        elif kind == "S":
            owned.setdefault(a, []).append(b)
        else:
            mark, fsync = f"{a}:{b}", schema
    tables.sort()
    return make_plan(
        tables,
        [(by_oid[c], by_oid[p]) for c, p in edges if c in by_oid and p in by_oid],
        keep=keep,
        sequences={by_oid[t]: sorted(s) for t, s in owned.items() if t in by_oid},
        oids={t: o for o, t in by_oid.items()},
        truncate_us=TRUNCATE_US.get(fsync, TRUNCATE_US["on"]),
        mark=mark,
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


_Piece = tuple[sql.Composable, tuple["Table", ...]]  # code, and the tables it touches


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

    A plan that no longer matches the catalog (see :class:`PlanCache`) is reloaded, and
    :data:`plan_cache` updated, before anything is deleted; the reset is then retried (at
    most twice).
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
    call = _call(conn, name, reset_sequences, timeout_ms, plan.mark)
    rendered: _Rendered | None = None
    query: bytes
    if use_do:
        rendered = _render(conn, plan, strategy, do_args=(reset_sequences, timeout_ms, plan.mark))
        query = (
            sql.SQL("DO {}; SELECT pg_catalog.current_setting('testdb.clean_report')")
            .format(sql.Literal(rendered.text))
            .as_bytes(conn)
        )
    elif name in created:
        query = call
    else:
        rendered = _render(conn, plan, strategy)
        create = sql.SQL(
            "CREATE OR REPLACE FUNCTION pg_temp.{}(p_reset boolean, p_lock_timeout_ms integer,"
            " p_mark text) RETURNS text LANGUAGE plpgsql AS {}; "
        ).format(sql.Identifier(name), sql.Literal(rendered.text))
        query = create.as_bytes(conn) + call
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


_calls: dict[tuple[str, bool, int, str], bytes] = {}


def _call(
    conn: psycopg.Connection[Any], name: str, reset_sequences: bool, timeout_ms: int, mark: str
) -> bytes:
    """``SELECT pg_temp.<name>(…)``, composed once per distinct arguments (it is sent on
    every reset: composing it again would cost more than a tenth of a small reset)."""
    key = (name, reset_sequences, timeout_ms, mark)
    query = _calls.get(key)
    if query is None:
        if len(_calls) > 256:
            _calls.clear()
        args = sql.SQL(", ").join([sql.Literal(reset_sequences), sql.Literal(timeout_ms), sql.Literal(mark)])
        query = sql.SQL("SELECT pg_temp.{}({})").format(sql.Identifier(name), args).as_bytes(conn)
        _calls[key] = query
    return query


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
    on_waited = [h for h in holders if h[0] in waited]
    relevant = on_waited or holders
    if waited and (on_waited or len(waited) <= 3):
        named = list(waited) if len(waited) <= 3 else list(dict.fromkeys(h[0] for h in on_waited))
    else:
        named = list(dict.fromkeys(h[0] for h in relevant)) or list(waited or plan.tables)
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
            text = " ".join(str(query).split())  # one line
            found.append((by_oid[oid], str(mode), int(pid), str(app or ""), str(state), text))
    return found


# --- generating the PL/pgSQL ----------------------------------------------------------------

_HEAD = """DECLARE
  {params}v_f boolean[];
  v_steps integer[];
  v_i integer;
  v_n bigint;
  v_s bigint[];
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
  -- No lock is waited for longer than this. The commit does not wait for its WAL to reach
  -- the disk: in a server crash the emptying could be lost, never consistency (and on a
  -- disk with a slow fsync that wait is most of a small reset).
  PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true),
          pg_catalog.set_config('synchronous_commit', 'off', true);"""


def _render(
    conn: psycopg.Connection[Any],
    plan: CleanPlan,
    strategy: Strategy,
    do_args: tuple[bool, int, str] | None = None,
) -> _Rendered:
    """The PL/pgSQL body of the reset function (or of a DO block, given ``do_args``).

    Also returns the first line of each piece of code with the tables it touches, so that
    the line number in an error's context tells which table a lock was waited for.
    """

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
    chunks: list[_Piece] = [
        (sql.SQL(_HEAD).format(params=params, stale=give(sql.Literal('{"stale": true}'))), ()),
        *_Gen(conn, plan).steps(strategy),
    ]
    if plan.sequences:
        # setval, not ALTER SEQUENCE … RESTART: it needs only UPDATE on the sequence and
        # takes no lock that a session's open nextval() holds (ALTER SEQUENCE would wait for
        # every transaction that inserted a row). setval is not transactional, so it runs
        # last, once every table is empty.
        seqs = sorted({s for t in plan.tables for s in plan.sequences.get(t, ())})
        chunks.append(
            (
                sql.SQL(
                    "  IF p_reset THEN\n"
                    "    PERFORM pg_catalog.setval(s.seqrelid, s.seqstart, false)\n"
                    "    FROM pg_catalog.pg_sequence AS s\n"
                    "    WHERE s.seqrelid = ANY ({}::pg_catalog.oid[])\n"
                    "      AND pg_catalog.pg_sequence_last_value(s.seqrelid) IS NOT NULL;\n"
                    "  END IF;"
                ).format(sql.Literal("{" + ",".join(map(str, seqs)) + "}")),
                (),
            )
        )
    report = sql.SQL(
        "pg_catalog.json_build_object('emptied', v_done, 'rows', v_rows,"
        " 'truncated', v_trunc, 'exact', v_exact)::text"
    )
    chunks.append((sql.SQL("  {}\nEND").format(give(report)), ()))

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
    """PL/pgSQL for one plan.

    The reset first probes every table in ONE statement,
    ``SELECT ARRAY[EXISTS (SELECT FROM ONLY t1), …] INTO v_f`` (one executor run, planned
    once per session: measured ~1.5-2 ms for 300 tables, against ~2-3 ms for one probe
    statement per table), turns the flags into the sorted list of steps holding rows, and
    loops over that list. Each iteration finds its step's code through a binary tree of
    ``IF v_i <= pivot`` (about log2(steps) tests), so a reset of 300 tables of which 5 hold
    rows runs ~50 PL/pgSQL statements besides the probe, not 300 ``IF``s (~0.5 ms).

    Why a cycle needs no special care: PostgreSQL checks NO ACTION and RESTRICT foreign
    keys (and runs CASCADE / SET NULL actions) in AFTER triggers queued until the end of
    the statement, and a statement with data-modifying CTEs --
    ``WITH d1 AS (DELETE FROM ONLY a RETURNING 1), d2 AS (DELETE FROM ONLY b RETURNING 1)
    SELECT …`` -- is ONE statement. So every table of a cycle is emptied by one statement
    and the checks then find no referencing rows: no column is set to NULL, no constraint
    needs to be deferrable. A plain DELETE does the same for a self-reference.
    tests/integration/test_clean.py verifies it on PostgreSQL 15 and 18 for a
    self-reference (RESTRICT), a two-table cycle of NOT NULL, non-deferrable RESTRICT keys
    (where a DELETE of either table alone fails) and a three-table cycle mixing CASCADE,
    SET NULL and a deferrable key; tests/unit/test_clean_plan.py on random graphs.
    """

    def __init__(self, conn: psycopg.Connection[Any], plan: CleanPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.step_index = {step: i for i, step in enumerate(plan.steps, start=1)}

    def steps(self, strategy: Strategy) -> list[_Piece]:
        """The code after the head, with the tables each piece touches."""
        plan = self.plan
        if not plan.tables:
            return []
        step_of = {t: self.step_index[step] for step in plan.steps for t in step}
        pieces: list[_Piece] = [
            (
                sql.SQL("  SELECT ARRAY[{}] INTO v_f;").format(
                    sql.SQL(", ").join(
                        sql.SQL("EXISTS (SELECT FROM {})").format(t.relation) for t in plan.tables
                    )
                ),
                plan.tables,
            ),
            (
                sql.SQL(
                    "  SELECT array_agg(DISTINCT u.s ORDER BY u.s) INTO v_steps\n"
                    "  FROM ROWS FROM (pg_catalog.unnest(v_f), pg_catalog.unnest({}::integer[])) AS u(f, s)\n"
                    "  WHERE u.f;"
                ).format(sql.Literal("{" + ",".join(str(step_of[t]) for t in plan.tables) + "}")),
                (),
            ),
        ]
        if strategy == "delete":
            return pieces + self.loop([(step, self.delete(step)) for step in plan.steps])
        if strategy == "auto":
            return pieces + self.loop(
                [
                    (step, self.auto(step) if step[0] in plan.truncatable else self.delete(step))
                    for step in plan.steps
                ]
            )
        first = [step for step in plan.steps if step[0] in plan.truncatable]
        later = [step for step in plan.steps if step[0] not in plan.truncatable]
        pieces += self.loop([(step, self.mark_for_truncate(step)) for step in first])
        pieces.append((self.truncate_marked(), tuple(t for step in first for t in step)))
        # Tables a TRUNCATE may not name are DELETEd once the others are empty.
        return pieces + self.loop([(step, self.delete(step)) for step in later])

    def loop(self, code: list[tuple[tuple[Table, ...], list[sql.Composable]]]) -> list[_Piece]:
        """Run each step's code for the steps in v_steps, in plan order."""
        if not code:
            return []
        numbered = [(self.step_index[step], step, lines) for step, lines in code]
        return [
            (sql.SQL("  IF v_steps IS NOT NULL THEN\n  FOREACH v_i IN ARRAY v_steps LOOP"), ()),
            *self._tree(numbered),
            (sql.SQL("  END LOOP;\n  END IF;"), ()),
        ]

    def _tree(self, numbered: list[tuple[int, tuple[Table, ...], list[sql.Composable]]]) -> list[_Piece]:
        if len(numbered) <= 3:
            pieces: list[_Piece] = []
            for k, (index, step, lines) in enumerate(numbered):
                keyword = sql.SQL("IF" if k == 0 else "ELSIF")
                pieces.append((sql.SQL("  {} v_i = {} THEN").format(keyword, sql.Literal(index)), ()))
                pieces.append((sql.SQL("\n").join(lines), step))
            return [*pieces, (sql.SQL("  END IF;"), ())]
        middle = len(numbered) // 2
        return [
            (sql.SQL("  IF v_i <= {} THEN").format(sql.Literal(numbered[middle - 1][0])), ()),
            *self._tree(numbered[:middle]),
            (sql.SQL("  ELSE"), ()),
            *self._tree(numbered[middle:]),
            (sql.SQL("  END IF;"), ()),
        ]

    def _pos(self, table: Table) -> sql.Literal:
        return sql.Literal(self.plan.position[table])

    def delete(self, step: tuple[Table, ...], indent: str = "    ") -> list[sql.Composable]:
        """DELETE the step's tables (one statement) and record those that held rows."""
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
                    "{}IF v_s[{k}] > 0 THEN v_done := v_done || {i}; v_rows := v_rows || v_s[{k}]; END IF;"
                ).format(ind, k=sql.Literal(k), i=self._pos(table))
            )
        return code

    def auto(self, step: tuple[Table, ...]) -> list[sql.Composable]:
        """DELETE the step, or TRUNCATE it if it holds at least its cap of rows.

        A table's file size bounds its rows (a heap row takes at least MIN_ROW_BYTES), so a
        table whose file is smaller than cap * MIN_ROW_BYTES is DELETEd without counting:
        ``pg_relation_size`` is a PL/pgSQL "simple expression" (no executor, no new lock),
        where a count would be a statement of its own per dirty table -- measurable when
        every table holds rows. Otherwise rows are counted up to the cap.

        The TRUNCATE names the step and everything that references it (all earlier in the
        plan, so already empty) and waits at most AUTO_TRUNCATE_LOCK_MS for its ACCESS
        EXCLUSIVE locks; if another session holds one, the step is DELETEd instead. (The
        EXCEPTION block's subtransaction, which also restores lock_timeout, is only entered
        when a TRUNCATE is tried.)
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
        record = [
            sql.SQL(
                "      IF v_s[{k}] > 0 THEN v_done := v_done || {i}; v_rows := v_rows || v_s[{k}];"
                " v_trunc := v_trunc || {i}; END IF;"
            ).format(k=sql.Literal(k), i=self._pos(table))
            for k, table in enumerate(step, start=1)
        ]
        code = [
            sql.SQL("    SELECT ARRAY[{}] INTO v_s;").format(counts),
            sql.SQL("    IF {} THEN").format(big),
            sql.SQL("    BEGIN"),
            sql.SQL(
                "      PERFORM pg_catalog.set_config('lock_timeout',"
                " least(p_lock_timeout_ms, {})::text || 'ms', true);"
            ).format(sql.Literal(AUTO_TRUNCATE_LOCK_MS)),
            sql.SQL("      TRUNCATE {};").format(sql.SQL(", ").join(t.relation for t in closure)),
            sql.SQL(
                "      PERFORM pg_catalog.set_config('lock_timeout', p_lock_timeout_ms::text || 'ms', true);"
            ),
            *record,
            sql.SQL("      v_exact := false;"),
            sql.SQL("    EXCEPTION WHEN lock_not_available THEN"),
            *self.delete(step, indent="      "),
            sql.SQL("    END;"),
            sql.SQL("    ELSE"),
            *self.delete(step, indent="      "),
            sql.SQL("    END IF;"),
        ]
        table = step[0]
        if len(step) > 1 or table.partitioned:  # no single file to measure: always count
            return code
        # The regclass literal is resolved when the statement is planned, and the plan is
        # invalidated with the table.
        size = sql.SQL("pg_catalog.pg_relation_size({}::pg_catalog.regclass)").format(
            sql.Literal(table.qualified.as_string(self.conn))
        )
        return [
            sql.SQL("    IF {} < {} THEN").format(size, sql.Literal(plan.caps[table] * MIN_ROW_BYTES)),
            *self.delete(step, indent="      "),
            sql.SQL("    ELSE"),
            *code,
            sql.SQL("    END IF;"),
        ]

    def mark_for_truncate(self, step: tuple[Table, ...]) -> list[sql.Composable]:
        """Strategy truncate, first pass: note each table holding rows (counted up to a cap,
        for the report) and everything that references it."""
        plan = self.plan
        code: list[sql.Composable] = []
        for table in step:
            closure = "{" + ",".join(str(plan.position[r]) for r in plan.referencers[table]) + "}"
            code += [
                sql.SQL("  IF v_f[{}] THEN").format(self._pos(table)),
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
        return code

    def truncate_marked(self) -> sql.Composable:
        """Strategy truncate, second pass: one TRUNCATE of every marked table."""
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


def clean_database(url: PgUrl | str, settings: CleanSettings) -> CleanReport:
    """Connect to the database at ``url``, empty it (see :func:`clean_connection`), disconnect."""
    target = make_url(url) if isinstance(url, str) else url
    conn = connect(target)
    try:
        return clean_connection(conn, settings)
    finally:
        conn.close()


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    """Refuse a connection inside a transaction: cleaning commits, and would commit it too."""
    if conn.closed:
        raise CleanError("cannot clean through a closed connection")
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
