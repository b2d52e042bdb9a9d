"""CREATE DATABASE … STRATEGY: FILE_COPY against WAL_LOG, 8 clones of the 100-table template.

testdb picks FILE_COPY when the server runs with fsync=off and WAL_LOG otherwise
(``testdb.provision.clone_strategy``); this measures both on each server kind so the
choice stays a measured one. Baseline: WAL_LOG (PostgreSQL's default since 15).

    python bench/clone_strategy.py [--server local|embedded] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

from psycopg import sql
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provision import server_info, version_of  # noqa: E402

from testdb.provision import drop_database  # noqa: E402
from testdb.servers.base import admin_connection  # noqa: E402
from testdb.template import _run_callable  # noqa: E402

CLONES = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=("local", "embedded"), default="embedded")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    info, stop = server_info(args.server)
    source = f"bench_src_{secrets.token_hex(3)}"
    medians: dict[str, float] = {}
    try:
        version = version_of(info)
        with admin_connection(info) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(source)))
        _run_callable(
            "bench_schema:create_all",
            info.database_url(source).set(drivername="postgresql+psycopg").render_as_string(False),
            HERE,
        )
        with admin_connection(info) as conn:
            for strategy in ("WAL_LOG", "FILE_COPY"):
                samples = []
                for _ in range(args.runs):
                    names = [f"{source}_c{i}" for i in range(CLONES)]
                    started = time.perf_counter()
                    for name in names:
                        conn.execute(
                            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY {}").format(
                                sql.Identifier(name), sql.Identifier(source), sql.SQL(strategy)
                            )
                        )
                    samples.append(time.perf_counter() - started)
                    for name in names:
                        drop_database(conn, name)
                medians[strategy] = statistics.median(samples)
    finally:
        with admin_connection(info) as conn:
            drop_database(conn, source)
        stop()
    table = Table(title=f"{CLONES} clones of a 100-table template, median of {args.runs} ({version})")
    for column in ("strategy", "median s", "vs WAL_LOG"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for strategy, seconds in medians.items():
        table.add_row(strategy, f"{seconds:.3f}", f"{medians['WAL_LOG'] / seconds:.2f}x")
    Console().print(table)
    print(
        json.dumps(
            {
                "name": f"clone-strategy-{args.server}",
                "baseline_s": round(medians["WAL_LOG"], 4),
                "testdb_s": round(min(medians.values()), 4),
                "ratio": round(medians["WAL_LOG"] / min(medians.values()), 2),
                "file_copy_s": round(medians["FILE_COPY"], 4),
                "machine": version,
            }
        )
    )


if __name__ == "__main__":
    main()
