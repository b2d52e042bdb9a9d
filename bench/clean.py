"""Cleaning benchmark: emptying a database between tests.

Schemas of 100 and 300 tables (bench_schema's FK tree: table i references (i-1)//2, ON
DELETE CASCADE, enums and sequences mixed in), each in a database of its own, and two cases:
"5 dirty" (a chain of 5 tables, 3 rows each) and "all dirty" (every table holds 100 rows).

Baselines, over one persistent autocommit connection:
- seed as written: SQLAlchemy ``MetaData.reflect()`` + ``sorted_tables`` on every reset,
  then one autocommit DELETE per table in that order;
- seed at its best: the order computed once, one autocommit DELETE per table.
testdb: ``clean.reset`` with each strategy (one round trip per reset), plan loaded once.

Each method gets one untimed warm-up reset, then the median of ``--repeat`` timed resets
(``--heavy-repeat`` in the all-dirty case); before each, the tables are dirtied again,
untimed and through another session. The methods take turns, so a change in the machine's
load hits them alike. Prints a table, the time of the ordering query, and as its last line
one JSON object: name, baseline_s (seed at its best, 100 tables, 5 dirty), testdb_s
(strategy auto, the default, same case), ratio, and the details.

    python bench/clean.py [--server local|embedded] [--repeat 20] [--heavy-repeat 9] [--budget 5]

A method whose resets take long (TRUNCATE of the whole tree on a disk with slow file
operations: seconds per reset) stops after 3 resets once it has used ``--budget`` seconds,
so the run stays within a few minutes; the table shows how many resets each median is of.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import Engine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_schema import build_metadata  # noqa: E402

from testdb import clean  # noqa: E402
from testdb.clean.catalog import catalog_query  # noqa: E402
from testdb.config import EmbeddedSettings  # noqa: E402
from testdb.servers import embedded, local  # noqa: E402
from testdb.servers.base import ServerInfo, admin_connection, connect  # noqa: E402

SHAPES = (100, 300)
CHAIN = 5  # tables dirtied in the "5 dirty" case: t000 -> t001 -> t003 -> t007 -> t015
FEW_ROWS = 3
ALL_ROWS = 100
STRATEGIES = ("delete", "truncate", "auto")
HEADLINE = (100, "5 dirty")
MIN_REPEAT = 3

Conn = psycopg.Connection[Any]


@contextmanager
def server(kind: str) -> Iterator[ServerInfo]:
    if kind == "local":
        info = local.find()
        if info is None:
            sys.exit("no local PostgreSQL server answers; use --server embedded")
        yield info
        return
    info = embedded.acquire(EmbeddedSettings(), secrets.token_hex(6), [])
    try:
        yield info
    finally:
        embedded.release(info, force=True)


def table_name(i: int) -> str:
    return f"t{i:03d}"


def chain() -> list[int]:
    nodes = [0]
    while len(nodes) < CHAIN:
        nodes.append(2 * nodes[-1] + 1)
    return nodes


def fill_sql(tables: list[int], rows: int) -> sql.Composable:
    """One multi-statement string inserting ``rows`` rows into each table (parents first)."""
    statements = []
    for i in sorted(tables):
        columns = [sql.SQL("g"), sql.Literal("row")]
        names = [sql.Identifier("id"), sql.Identifier("name")]
        if i:
            names.append(sql.Identifier("parent_id"))
            columns.append(sql.SQL("g"))
        statements.append(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM generate_series(1, {}) AS g").format(
                sql.Identifier(table_name(i)),
                sql.SQL(", ").join(names),
                sql.SQL(", ").join(columns),
                sql.Literal(rows),
            )
        )
    return sql.SQL("; ").join(statements)


def count_sql(n: int) -> sql.Composable:
    parts = [sql.SQL("SELECT count(*) AS c FROM {}").format(sql.Identifier(table_name(i))) for i in range(n)]
    return sql.SQL("SELECT sum(c) FROM ({}) AS u").format(sql.SQL(" UNION ALL ").join(parts))


class Database:
    """One benchmark database: its schema, a persistent connection, and dirtying."""

    def __init__(self, info: ServerInfo, name: str, tables: int) -> None:
        self.tables = tables
        self.url = info.database_url(name)
        sa_url = self.url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        self.engine: Engine = create_engine(sa_url)
        build_metadata(tables).create_all(self.engine)
        self.conn: Conn = connect(self.url)  # the one every method resets through
        # The tables are dirtied through another session, as an application under test
        # would: changing session_replication_role empties the session's plan cache.
        self.filler: Conn = connect(self.url)
        with contextlib.suppress(psycopg.Error):  # superuser only: fill without FK triggers
            self.filler.execute("SET session_replication_role = replica")  # (the rows are consistent)
        self.fills = {
            "5 dirty": fill_sql(chain(), FEW_ROWS),
            "all dirty": fill_sql(list(range(tables)), ALL_ROWS),
        }
        self.counter = count_sql(tables)

    def dirty(self, case: str) -> None:
        self.filler.execute(self.fills[case], prepare=False)

    def rows(self) -> int:
        row = self.conn.execute(self.counter).fetchone()
        return int(row[0]) if row else -1

    def close(self) -> None:
        self.conn.close()
        self.filler.close()
        self.engine.dispose()


def seed_order(engine: Engine) -> list[str]:
    """The seed's order: reflect the schema, sort it, children first."""
    metadata = MetaData()
    metadata.reflect(engine)
    return [t.name for t in reversed(metadata.sorted_tables)]


def delete_each(conn: Conn, order: list[str]) -> None:
    for name in order:
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(name)))


def methods(db: Database) -> dict[str, Callable[[], None]]:
    best_order = seed_order(db.engine)
    plan = clean.load_plan(db.conn, ["alembic_version"])
    found: dict[str, Callable[[], None]] = {
        "seed as written (reflect + DELETE each)": lambda: delete_each(db.conn, seed_order(db.engine)),
        "seed at its best (DELETE each)": lambda: delete_each(db.conn, best_order),
    }
    for strategy in STRATEGIES:
        found[f"testdb {strategy}"] = lambda s=strategy: clean.reset(db.conn, plan, s)
    return found


BEST = "seed at its best (DELETE each)"
TRUNCATE = "testdb truncate"


def measure(
    db: Database, case: str, resets: dict[str, Callable[[], object]], repeat: int, budget: float
) -> dict[str, list[float]]:
    """Timed resets of the methods, interleaved (each round runs each method once, so a
    change in the machine's load hits them alike). A method whose resets have taken
    more than ``budget`` seconds in total stops after MIN_REPEAT of them."""
    samples: dict[str, list[float]] = {method: [] for method in resets}
    for reset in resets.values():
        db.dirty(case)
        reset()  # warm-up: creates testdb's session function, warms caches and prepared statements
    for round_ in range(repeat):
        for method, reset in resets.items():
            if round_ >= MIN_REPEAT and sum(samples[method]) > budget:
                continue
            db.dirty(case)
            started = time.perf_counter()
            reset()
            samples[method].append(time.perf_counter() - started)
            left = db.rows()
            if left:
                raise SystemExit(f"{method}, {case}: {left} rows left after a reset: the method is broken")
    return samples


def ordering_times(db: Database, repeat: int) -> dict[str, float]:
    def median_ms(action: Callable[[], object], times: int = repeat) -> float:
        samples = []
        for _ in range(times):
            started = time.perf_counter()
            action()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    edges = len(clean.load_plan(db.conn, []).edges)
    query = catalog_query(db.conn.info.server_version)
    return {
        "catalog_query_ms": median_ms(lambda: db.conn.execute(query).fetchall()),
        "load_plan_ms": median_ms(lambda: clean.load_plan(db.conn, [])),
        "reflect_sort_ms": median_ms(lambda: seed_order(db.engine), times=min(5, repeat)),
        "fk_edges": edges,
    }


WRITES = 1000  # the write-heavy test: single-row INSERTs, each its own statement
WRITE_ROUNDS = 15


def write_heavy(db: Database) -> dict[str, float]:
    """What testdb's change signal costs the writes it watches.

    A write-heavy test: WRITES single-row INSERTs, one statement each, in one transaction,
    through a session of its own, into a table added beside the schema. "plain": right
    after a TRUNCATE of that table (new, empty files: no trace of testdb). "testdb": after
    a testdb reset of the previous round's rows (the EXISTS probe adds nothing on the write
    path; what remains is the table's state after a DELETE). Rounds alternate; min and
    median ms of each.
    """
    db.conn.execute("CREATE TABLE bench_writes (id int PRIMARY KEY, name text NOT NULL)")
    plan = clean.load_plan(db.conn, ["alembic_version"])
    samples: dict[str, list[float]] = {"plain": [], "testdb": []}
    with connect(db.url) as writer:
        for _ in range(WRITE_ROUNDS):
            for kind, times in samples.items():
                if kind == "plain":
                    db.conn.execute("TRUNCATE bench_writes")
                else:
                    clean.reset(db.conn, plan, "auto")
                started = time.perf_counter()
                with writer.transaction():
                    for i in range(WRITES):
                        writer.execute("INSERT INTO bench_writes (id, name) VALUES (%s, 'w')", (i,))
                times.append(time.perf_counter() - started)
    db.conn.execute("DROP TABLE bench_writes")
    result = {
        f"{kind}_{stat.__name__}_ms": stat(times) * 1000
        for kind, times in samples.items()
        for stat in (min, statistics.median)
    }
    result["overhead_pct_min"] = (result["testdb_min_ms"] / result["plain_min_ms"] - 1) * 100
    result["overhead_pct_median"] = (result["testdb_median_ms"] / result["plain_median_ms"] - 1) * 100
    return result


def version_of(info: ServerInfo) -> str:
    with admin_connection(info) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    return f"PostgreSQL {version[0] if version else '?'} (fsync={fsync[0] if fsync else '?'})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=("local", "embedded"), default="local")
    parser.add_argument("--repeat", type=int, default=20, help="timed resets per method, 5-dirty case")
    parser.add_argument("--heavy-repeat", type=int, default=9, help="timed resets per method, all-dirty case")
    parser.add_argument(
        "--budget", type=float, default=5.0, help="seconds per method and case (then 3 resets)"
    )
    args = parser.parse_args()
    console = Console()
    prefix = f"testdb_bench_clean_{secrets.token_hex(3)}"
    results: dict[tuple[int, str], dict[str, list[float]]] = {}
    ordering: dict[str, float] = {}
    writes: dict[str, float] = {}
    started = time.perf_counter()
    with server(args.server) as info:
        version = version_of(info)
        names = {n: f"{prefix}_{n}" for n in SHAPES}
        databases: list[Database] = []
        try:
            for n in SHAPES:
                with admin_connection(info) as admin:
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names[n])))
                db = Database(info, names[n], n)
                databases.append(db)
                for case, repeat in (("5 dirty", args.repeat), ("all dirty", args.heavy_repeat)):
                    console.log(f"{n} tables, {case}")
                    resets = methods(db)
                    # TRUNCATE gives every table new files, which makes every session replan
                    # its statements on those tables: run it apart, after the others, so it
                    # does not charge them with replanning they would not do in real use.
                    alone = {TRUNCATE: resets.pop(TRUNCATE)}
                    results[(n, case)] = {
                        **measure(db, case, resets, repeat, args.budget),
                        **measure(db, case, alone, repeat, args.budget),
                    }
                if n == max(SHAPES):
                    ordering = ordering_times(db, args.repeat)
                if n == min(SHAPES):
                    console.log(f"{n} tables, write-heavy test ({WRITES} single-row INSERTs)")
                    writes = write_heavy(db)
        finally:
            for db in databases:
                db.close()
            with admin_connection(info) as admin:
                for name in names.values():
                    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                    admin.execute(drop.format(sql.Identifier(name)))
    total = time.perf_counter() - started

    machine = f"{platform.machine()}, {os.cpu_count()} cores, {version}, {args.server} server"
    table = Table(title=f"clean: one reset, median ms ({machine})")
    for column in ("tables", "case", "method", "resets", "median ms", "vs seed at its best"):
        table.add_column(column, justify="left" if column in ("case", "method") else "right")
    medians: dict[str, dict[str, float]] = {}
    for (n, case), by_method in results.items():
        best = statistics.median(by_method[BEST])
        for method, samples in by_method.items():
            median = statistics.median(samples)
            medians.setdefault(f"{n}/{case}", {})[method] = round(median * 1000, 3)
            ratio = best / median
            table.add_row(
                str(n),
                case,
                method,
                str(len(samples)),
                f"{median * 1000:.2f}",
                f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower",
            )
        table.add_section()
    console.print(table)
    console.print(
        f"ordering, {max(SHAPES)} tables / {ordering['fk_edges']:.0f} FK edges: catalog query"
        f" {ordering['catalog_query_ms']:.2f} ms, load_plan (query + ordering)"
        f" {ordering['load_plan_ms']:.2f} ms (medians of {args.repeat}), SQLAlchemy reflect + sort"
        f" {ordering['reflect_sort_ms']:.1f} ms; total run {total:.0f} s"
    )
    console.print(
        f"write-heavy test, {WRITES} single-row INSERTs (min / median of {WRITE_ROUNDS}): after TRUNCATE"
        f" {writes['plain_min_ms']:.1f} / {writes['plain_median_ms']:.1f} ms, after a testdb reset"
        f" {writes['testdb_min_ms']:.1f} / {writes['testdb_median_ms']:.1f} ms"
        f" ({writes['overhead_pct_min']:+.1f}% / {writes['overhead_pct_median']:+.1f}%)"
    )

    def med(n: int, case: str, method: str) -> float:
        return statistics.median(results[(n, case)][method])

    def ratio(n: int, case: str) -> float:
        return med(n, case, BEST) / med(n, case, "testdb auto")

    baseline = med(*HEADLINE, BEST)
    testdb = med(*HEADLINE, "testdb auto")
    print(
        json.dumps(
            {
                "name": "clean",
                "baseline_s": round(baseline, 5),
                "testdb_s": round(testdb, 5),
                "ratio": round(baseline / testdb, 1),
                "ratio_300_5_dirty": round(ratio(300, "5 dirty"), 1),
                "ratio_100_all_dirty": round(ratio(100, "all dirty"), 2),
                "ratio_300_all_dirty": round(ratio(300, "all dirty"), 2),
                "median_ms": medians,
                "ordering": {k: round(v, 3) for k, v in ordering.items()},
                "resets": {
                    f"{n}/{case}": {m: len(v) for m, v in r.items()} for (n, case), r in results.items()
                },
                "write_heavy": {k: round(v, 2) for k, v in writes.items()},
                "machine": machine,
            }
        )
    )


if __name__ == "__main__":
    main()
