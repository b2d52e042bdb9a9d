"""Reading a database's tables, keys and triggers (one query), and caching the plans."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from testdb.clean.connection import check_idle, end_transaction, one_line
from testdb.clean.plan import TRUNCATE_US, CleanPlan, Rights, Table, Trigger, make_plan
from testdb.errors import CleanError

__all__ = ["CATALOG_QUERY", "MARK_SQL", "PlanCache", "load_plan", "plan_cache"]

#: The catalog state a plan was read at: the highest OIDs of pg_class, pg_constraint and
#: pg_trigger (see PlanCache). The reset function compares it first thing.
MARK_SQL = (
    # Temporary tables (any session's) are not cleaned: they must not make every plan stale.
    "(SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_class WHERE relpersistence <> 't')::text || ':'"
    " || (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_constraint WHERE contype = 'f')::text || ':'"
    " || (SELECT coalesce(max(oid), 0) FROM pg_catalog.pg_trigger)::text"
)

# One query, plain rows (building JSON server-side cost more than the rows' transfer):
#   kind 'r' / 'p'  a table / a partitioned table: oid, rights (1: the role owns it,
#                   2: may TRUNCATE it), schema, name
#   kind 'x'        a table that belongs to an extension: never cleaned, its keys count
#   kind 'f'        a foreign key: referencing oid, referenced oid
#   kind 'S'        an owned sequence (serial or identity): owning table oid, sequence oid
#   kind 'T'        a user trigger firing on DELETE or TRUNCATE: table (partition root)
#                   oid, tgtype, schema and name of the relation carrying it, trigger
#                   name, tgenabled, function
#   kind 'm'        the catalog mark (see MARK_SQL), fsync, and whether the role may SET
#                   session_replication_role (superuser; PostgreSQL 15+: has_parameter_privilege)
# Partitions are left out (their partitioned root stands for them) and foreign keys are
# taken at the root (conparentid = 0: the copies PostgreSQL makes on each partition are
# skipped) and mapped to partition roots, so a key declared on or pointing at a single
# partition still orders its root. Inheritance children are tables of their own. Views,
# materialized views, foreign tables and other sessions' temporary tables never appear.
# Triggers are listed on every relation that carries one (a trigger declared on a
# partitioned table is cloned onto each partition, and each clone fires).
CATALOG_QUERY = r"""
WITH rels AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relowner
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
       r.oid::bigint,
       (CASE WHEN pg_catalog.pg_has_role(r.relowner, 'USAGE') THEN 1 ELSE 0 END
        + CASE WHEN pg_catalog.has_table_privilege(r.oid, 'TRUNCATE') THEN 2 ELSE 0 END)::bigint,
       r.nspname::text, r.relname::text, NULL, NULL, NULL
FROM rels AS r WHERE r.relkind <> 'S'
UNION ALL
SELECT 'f',
       CASE WHEN ch.relispartition THEN pg_catalog.pg_partition_root(k.conrelid)::oid
            ELSE k.conrelid END::bigint,
       CASE WHEN pa.relispartition THEN pg_catalog.pg_partition_root(k.confrelid)::oid
            ELSE k.confrelid END::bigint,
       NULL, NULL, NULL, NULL, NULL
FROM pg_catalog.pg_constraint AS k
JOIN pg_catalog.pg_class AS ch ON ch.oid = k.conrelid
JOIN pg_catalog.pg_class AS pa ON pa.oid = k.confrelid
WHERE k.contype = 'f' AND k.conparentid = 0
UNION ALL
SELECT 'S', d.refobjid::bigint, d.objid::bigint, NULL, NULL, NULL, NULL, NULL
FROM rels AS s
JOIN pg_catalog.pg_depend AS d
  ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = s.oid
WHERE s.relkind = 'S' AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND d.deptype IN ('a', 'i')
UNION ALL
SELECT 'T',
       CASE WHEN c.relispartition THEN pg_catalog.pg_partition_root(c.oid)::oid
            ELSE c.oid END::bigint,
       g.tgtype::bigint, n.nspname::text, c.relname::text, g.tgname::text, g.tgenabled::text,
       g.tgfoid::pg_catalog.regproc::text
FROM pg_catalog.pg_trigger AS g
JOIN pg_catalog.pg_class AS c ON c.oid = g.tgrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE NOT g.tgisinternal AND g.tgenabled <> 'D' AND (g.tgtype & 40) <> 0
UNION ALL
SELECT 'm', 0, 0, {mark}, pg_catalog.current_setting('fsync'),
       (SELECT r.rolsuper{granted} FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)::text,
       NULL, NULL
"""


def catalog_query(server_version: int) -> sql.SQL:
    """The catalog query for a server (has_parameter_privilege exists from PostgreSQL 15)."""
    granted = ""
    if server_version >= 150000:
        granted = " OR pg_catalog.has_parameter_privilege('session_replication_role', 'SET')"
    return sql.SQL(CATALOG_QUERY.format(mark=MARK_SQL, granted=granted))


class _Rows:
    """The catalog rows, sorted into what make_plan takes."""

    def __init__(self) -> None:
        self.by_oid: dict[int, Table] = {}
        self.tables: list[Table] = []
        self.edges: list[tuple[int, int]] = []
        self.owned_sequences: dict[int, list[int]] = {}
        self.triggers: list[tuple[int, int, str, str, str, str, str]] = []
        self.owned: set[Table] = set()
        self.truncate: set[Table] = set()
        self.mark, self.fsync, self.replication_role = "", "on", False

    def add(self, kind: str, a: int, b: int, *texts: str) -> None:
        if kind in ("r", "p", "x"):
            table = self.by_oid[a] = Table(texts[0], texts[1], kind == "p")
            if kind != "x":
                self.tables.append(table)
            if b & 1:
                self.owned.add(table)
            if b & 2:
                self.truncate.add(table)
        elif kind == "f":
            self.edges.append((a, b))
        elif kind == "S":
            self.owned_sequences.setdefault(a, []).append(b)
        elif kind == "T":
            self.triggers.append((a, b, *texts[:5]))  # type: ignore[arg-type]
        else:
            self.mark, self.fsync, self.replication_role = texts[0], texts[1], texts[2] == "true"

    def plan(self, keep: Sequence[str]) -> CleanPlan:
        by_oid = self.by_oid
        triggers = [
            Trigger(by_oid[t], Table(schema, rel), name, enabled, events, function)
            for t, events, schema, rel, name, enabled, function in self.triggers
            if t in by_oid
        ]
        return make_plan(
            sorted(self.tables),
            [(by_oid[c], by_oid[p]) for c, p in self.edges if c in by_oid and p in by_oid],
            keep=keep,
            sequences={by_oid[t]: sorted(s) for t, s in self.owned_sequences.items() if t in by_oid},
            oids={t: o for o, t in by_oid.items()},
            truncate_us=TRUNCATE_US.get(self.fsync, TRUNCATE_US["on"]),
            mark=self.mark,
            triggers=triggers,
            rights=Rights(self.replication_role, frozenset(self.owned), frozenset(self.truncate)),
        )


def load_plan(conn: psycopg.Connection[Any], keep: Sequence[str] = ("alembic_version",)) -> CleanPlan:
    """Read the catalog of ``conn``'s database (one query) and order its tables."""
    check_idle(conn)
    try:
        rows = conn.execute(catalog_query(conn.info.server_version)).fetchall()
    except psycopg.Error as exc:
        raise CleanError(
            f"cannot read the tables of {conn.info.dbname}: {one_line(exc)}",
            hint="the role needs CONNECT on the database and USAGE on its schemas",
        ) from None
    finally:
        end_transaction(conn)
    found = _Rows()
    for row in rows:
        found.add(*row)
    return found.plan(keep)


class PlanCache:
    """Plans by database, validated on every reset at no extra round trip.

    The key is the database's identity (server host and port, database, user, keep list),
    not a catalog fingerprint: computing any fingerprint before each reset would cost a
    round trip of its own. Instead the plan carries a catalog *mark* -- the highest OID in
    ``pg_class``, ``pg_constraint`` and ``pg_trigger`` -- and the reset function compares it
    with the live catalog as its first statement (three index-only lookups, a few
    microseconds). A new table, index, sequence, foreign key or trigger gets a higher OID,
    so the reset sees that the plan is stale, returns without touching anything, and the
    cleaner reloads the plan and retries. Dropped or renamed tables (and dropped triggers)
    make the cached statements fail with "does not exist", which also triggers a reload.
    (Only after a wrap-around of the 32-bit OID counter could a new object get a lower OID;
    ``invalidate`` is there for that.)
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


# Process-wide on purpose: every connection to the same database (the plugin's cleaner,
# `testdb clean`, a user's own) shares the plan, read once per schema.
plan_cache = PlanCache()
