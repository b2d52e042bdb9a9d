"""Provisioning benchmark: 8 worker databases on a 100-table schema.

Baseline (the seed's way): create each database, then run ``metadata.create_all`` in it,
sequentially. testdb: cold (template built, then cloned) and warm (template reused).
Prints a table of medians, the scaling curve for 1-16 workers, and as its last line one
JSON object: name, baseline_s, testdb_s (warm), ratio, and the details.

    python bench/provision.py [--server local|embedded] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from psycopg import sql
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_schema import create_all  # noqa: E402

from testdb import lifecycle  # noqa: E402
from testdb.config import EmbeddedSettings, load_settings  # noqa: E402
from testdb.ownership import list_databases  # noqa: E402
from testdb.provision import drop_database  # noqa: E402
from testdb.servers import embedded, local  # noqa: E402
from testdb.servers.base import ServerInfo, admin_connection  # noqa: E402

WORKERS = 8
SCALING = (1, 2, 4, 8, 16)


def median_of(runs: int, action: Callable[[], float]) -> float:
    return statistics.median(action() for _ in range(runs))


def drop_prefixed(info: ServerInfo, prefix: str, templates: bool) -> None:
    with admin_connection(info) as conn:
        for row in list_databases(conn):
            ours = row.name.startswith(prefix) and row.marker is not None
            wanted = templates or "_tpl_" not in row.name
            if (ours and wanted) or row.name.startswith(prefix + "_seed"):
                drop_database(conn, row.name)


def seed_baseline(info: ServerInfo, prefix: str, workers: int) -> float:
    """The seed's conftest: CREATE DATABASE, then create_all, one worker after another."""
    started = time.perf_counter()
    with admin_connection(info) as conn:
        for i in range(workers):
            name = f"{prefix}_seed_gw{i}"
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            create_all(info.database_url(name).set(drivername="postgresql+psycopg").render_as_string(False))
    elapsed = time.perf_counter() - started
    with admin_connection(info) as conn:
        for i in range(workers):
            drop_database(conn, f"{prefix}_seed_gw{i}")
    return elapsed


def testdb_provision(info: ServerInfo, prefix: str, workers: int, cold: bool) -> float:
    settings = load_settings(HERE, {"prefix": prefix, "schema": {"callable": "bench_schema:create_all"}})
    if cold:
        drop_prefixed(info, prefix, templates=True)
    started = time.perf_counter()
    state = lifecycle.provision(
        settings,
        info,
        secrets.token_hex(6),
        lifecycle.Request(workers, False, root=HERE),
        bound=False,
        progress=lifecycle.Progress(),
    )
    elapsed = time.perf_counter() - started
    lifecycle.drop_run_databases(state)
    return elapsed


def server_info(kind: str) -> tuple[ServerInfo, Callable[[], None]]:
    if kind == "local":
        info = local.find()
        if info is None:
            sys.exit("no local server answers; use --server embedded")
        return info, lambda: None
    info = embedded.acquire(EmbeddedSettings(), secrets.token_hex(6), [])
    return info, lambda: embedded.release(info, force=True)


def version_of(info: ServerInfo) -> str:
    with admin_connection(info) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    return f"PostgreSQL {row[0] if row else '?'} (fsync={fsync[0] if fsync else '?'})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=("local", "embedded"), default="embedded")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    info, stop = server_info(args.server)
    prefix = f"bench_{secrets.token_hex(3)}"
    try:
        version = version_of(info)
        baseline = median_of(args.runs, lambda: seed_baseline(info, prefix, WORKERS))
        cold = median_of(args.runs, lambda: testdb_provision(info, prefix, WORKERS, cold=True))
        testdb_provision(info, prefix, WORKERS, cold=False)  # make sure the template exists
        warm = median_of(args.runs, lambda: testdb_provision(info, prefix, WORKERS, cold=False))
        scaling = {
            n: median_of(args.runs, lambda n=n: testdb_provision(info, prefix, n, cold=False))
            for n in SCALING
        }
    finally:
        drop_prefixed(info, prefix, templates=True)
        stop()

    machine = (
        f"{platform.machine()}, {platform.system()} {platform.release()}, {version}, {args.server} server"
    )
    table = Table(title=f"provision: 8 workers, 100-table schema, median of {args.runs} ({machine})")
    for column in ("method", "median s", "vs baseline"):
        table.add_column(column, justify="right" if column != "method" else "left")
    table.add_row("seed: create + create_all per worker", f"{baseline:.3f}", "1.0x")
    table.add_row("testdb cold (template built + clones)", f"{cold:.3f}", f"{baseline / cold:.1f}x faster")
    table.add_row("testdb warm (template reused + clones)", f"{warm:.3f}", f"{baseline / warm:.1f}x faster")
    console.print(table)
    curve = Table(title="scaling (warm): workers -> seconds")
    curve.add_column("workers", justify="right")
    curve.add_column("median s", justify="right")
    curve.add_column("s per worker", justify="right")
    for n, seconds in scaling.items():
        curve.add_row(str(n), f"{seconds:.3f}", f"{seconds / n:.4f}")
    console.print(curve)
    print(
        json.dumps(
            {
                "name": f"provision-{args.server}",
                "baseline_s": round(baseline, 4),
                "testdb_s": round(warm, 4),
                "ratio": round(baseline / warm, 1),
                "cold_s": round(cold, 4),
                "cold_ratio": round(baseline / cold, 1),
                "scaling_s": {str(n): round(s, 4) for n, s in scaling.items()},
                "runs": args.runs,
                "machine": machine,
            }
        )
    )


if __name__ == "__main__":
    main()
