"""What a reset works from: the tables, their order, and the user triggers on them.

A :class:`CleanPlan` is pure data, computed once per database schema (see
:mod:`testdb.clean.catalog`); the SQL generator (:mod:`testdb.clean.sqlgen`) turns it
into the reset function.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from psycopg import sql

from testdb.clean.graph import order_steps

__all__ = ["STRATEGIES", "CleanPlan", "Rights", "SkipMode", "Strategy", "Table", "Trigger", "make_plan"]

Strategy = Literal["delete", "truncate", "auto"]
STRATEGIES: tuple[str, ...] = ("delete", "truncate", "auto")

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

# --- skipping foreign-key checks -------------------------------------------------------------
# Emptying referencing tables first makes every foreign-key check of a reset pass, yet each
# deleted row of a referenced table still runs one RI query per constraint (RI_CHECK_US):
# with every table dirty that is most of the reset. A role that may SET
# session_replication_role can skip them (``replica`` fires no RI trigger), but each change
# of that setting empties the session's plan cache: the reset and the next one replan
# every statement, measured ~25-32 us per table of the plan (100 tables: +2.4 ms; 300:
# +9.6 ms, PostgreSQL 15). So a reset skips the checks only when the previous reset of the
# same plan ran at least REPLICA_FACTOR times that much RI work (see Cleaner), and only
# when nothing outside the plan references a cleaned table (its check must run) and no
# trigger that fires in replica mode (ENABLE ALWAYS / ENABLE REPLICA) is on a cleaned table.
REPLAN_US_PER_TABLE = 30.0
REPLICA_FACTOR = 2.0

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


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


# --- user triggers ------------------------------------------------------------------------
#
# A user trigger that fires when testdb empties a table (an append-only table whose BEFORE
# DELETE trigger raises, an audit/outbox trigger inserting rows elsewhere, a counter) must
# neither refuse the reset nor leave rows behind. How testdb keeps a table's triggers from
# firing, first possible way wins (:attr:`CleanPlan.skip`):
#
# 1. "disable": the role owns the table (a superuser owns everything): ``ALTER TABLE ONLY t
#    DISABLE TRIGGER name`` for each trigger that would fire, the DELETE, then ``ENABLE
#    [ALWAYS] TRIGGER name`` again, all in the reset's transaction. It takes a SHARE ROW
#    EXCLUSIVE lock (readers go on; DELETE itself waits for writers' row locks anyway) and
#    invalidates only the plans that touch that table.
# 2. "replica": the role may ``SET session_replication_role`` (a superuser, or PostgreSQL 15+
#    ``GRANT SET ON PARAMETER session_replication_role``) but does not own the table: the
#    step's DELETE runs with it set to ``replica``, which also skips foreign-key checks.
#    Second because every change of that setting empties the session's whole plan cache
#    (PostgreSQL's assign hook calls ResetPlanCache): the reset and the next one replan
#    every statement, the probe of every table included. Not for a table with an ``ENABLE
#    ALWAYS`` or ``ENABLE REPLICA`` trigger (those fire in replica mode) nor for one a kept
#    table references (its foreign-key check must run).
# 3. "truncate": the role may TRUNCATE the table and everything that references it, no kept
#    table references it, and no TRUNCATE trigger would fire: a TRUNCATE fires no DELETE
#    trigger. Last because it takes an ACCESS EXCLUSIVE lock and costs new files.
# 4. Otherwise a reset that finds rows in the table refuses before it deletes anything,
#    naming the trigger and the rights that would do (see failures.py).

SkipMode = Literal["disable", "replica", "truncate"]

# pg_trigger.tgtype bits
TRIGGER_DELETE = 8
TRIGGER_TRUNCATE = 32


@dataclass(frozen=True)
class Trigger:
    """A user trigger on a cleaned table (or on one of its partitions)."""

    table: Table  # the cleaned table whose emptying fires it
    relation: Table  # the relation that carries it: the table itself or a partition
    name: str
    enabled: str  # pg_trigger.tgenabled: O (origin and local), A (always), R (replica)
    events: int  # pg_trigger.tgtype
    function: str = ""

    @property
    def on_delete(self) -> bool:
        """Fires on DELETE in the normal (origin) replication role."""
        return bool(self.events & TRIGGER_DELETE) and self.enabled in ("O", "A")

    @property
    def on_truncate(self) -> bool:
        """Fires on TRUNCATE in the normal (origin) replication role."""
        return bool(self.events & TRIGGER_TRUNCATE) and self.enabled in ("O", "A")

    @property
    def in_replica(self) -> bool:
        """Still fires on DELETE with session_replication_role = replica."""
        return bool(self.events & TRIGGER_DELETE) and self.enabled in ("A", "R")


@dataclass(frozen=True)
class Rights:
    """What the cleaning role may do to keep user triggers from firing."""

    replication_role: bool = False  # may SET session_replication_role
    owned: frozenset[Table] = frozenset()  # tables the role owns (may ALTER)
    truncate: frozenset[Table] = frozenset()  # tables the role may TRUNCATE


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
    triggers: tuple[Trigger, ...] = ()
    rights: Rights = Rights()

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
        """Tables a TRUNCATE may empty: those no table outside the plan depends on, and
        whose TRUNCATE fires no user trigger (on them or on what references them)."""
        fires = {trigger.table for trigger in self.triggers if trigger.on_truncate}
        return frozenset(
            t
            for t in self.tables
            if not self.external.intersection(self.referencers[t])
            and not fires.intersection(self.referencers[t])
        )

    @cached_property
    def fk_checks_skippable(self) -> bool:
        """May a reset run with session_replication_role = replica (see the cost model)?"""
        rights = self.rights.replication_role
        return rights and not self.external and not any(t.in_replica for t in self.triggers)

    def fk_check_us(self, rows: Mapping[Table, int]) -> float:
        """Estimated time the RI checks of DELETEing ``rows`` take."""
        return sum(n * self.references.get(t, 0) * RI_CHECK_US for t, n in rows.items())

    @property
    def replan_us(self) -> float:
        """Estimated time replanning every statement of a reset takes."""
        return REPLAN_US_PER_TABLE * len(self.tables)

    @cached_property
    def triggered(self) -> dict[Table, tuple[Trigger, ...]]:
        """Cleaned tables whose DELETE would fire user triggers, with those triggers."""
        found: dict[Table, list[Trigger]] = {}
        for trigger in self.triggers:
            if trigger.on_delete and trigger.table in self.position:
                found.setdefault(trigger.table, []).append(trigger)
        return {t: tuple(found[t]) for t in self.tables if t in found}

    @cached_property
    def skip(self) -> dict[Table, SkipMode | None]:
        """How each triggered table is emptied without firing its triggers (None: no way
        this role may use; see the comment above :class:`Trigger`)."""
        return {table: self._skip_mode(table) for table in self.triggered}

    def _skip_mode(self, table: Table) -> SkipMode | None:
        rights = self.rights
        if table in rights.owned:
            return "disable"
        mine = [t for t in self.triggers if t.table == table]
        if rights.replication_role and table not in self.external and not any(t.in_replica for t in mine):
            return "replica"
        closure = self.referencers[table]
        if table in self.truncatable and all(t in rights.truncate for t in closure):
            return "truncate"
        return None

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
            sorted([t.display, str(mode)] for t, mode in self.skip.items()),
            self.fk_checks_skippable,
            [[t.table.display, t.relation.display, t.name, t.enabled] for t in self.triggers],
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
    triggers: Sequence[Trigger] = (),
    rights: Rights | None = None,
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
        triggers=tuple(t for t in triggers if t.table in members),
        rights=rights or Rights(),
    )
