"""Shared-server benchmark: six runners through one role capped at 24 connections.

Each runner is ``testdb run --unique -n 3 -- python HOLD`` where HOLD opens every
connection its budget allows (per worker: 1 cleaning + TESTDB_POOL_SIZE +
TESTDB_MAX_OVERFLOW) and holds them for a while, as a busy test suite would.

Baseline: the six runners one after another (what a team does by hand without
admission, since six at once exceed the cap). testdb: the six at once, admitted through the
server. Reports wall time, the role's peak connections (sampled), how many runs had to
wait, and "too many clients" seen (must be 0). Last line: JSON with name, baseline_s,
testdb_s, ratio.

    python bench/shared_server.py [--server local] [--runs 3] [--hold 2]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from testdb.ownership import list_databases
from testdb.provision import drop_database
from testdb.servers import local

RUNNERS, WORKERS, CAP = 6, 3, 24
TESTDB = Path(sys.executable).parent / "testdb"
HOLD = """
import os, sys, time, psycopg
n = int(os.environ["TESTDB_WORKERS"])
per = 1 + int(os.environ["TESTDB_POOL_SIZE"]) + int(os.environ["TESTDB_MAX_OVERFLOW"])
urls = [os.environ[f"TESTDB_WORKER_URL_GW{i}"] for i in range(n)]
conns = [psycopg.connect(url) for url in urls for _ in range(per)]
time.sleep(float(sys.argv[1]))
"""


class Peak:
    """Samples the role's connections every 50 ms while it runs."""

    def __init__(self, admin_url: str, role: str) -> None:
        self.admin_url, self.role, self.peak = admin_url, role, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (self.role,))
                self.peak = max(self.peak, int(row.fetchone()[0]))  # type: ignore[index]
                time.sleep(0.05)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def runner(url: str, cwd: Path, hold: float) -> subprocess.Popen[str]:
    argv = [str(TESTDB), "run", "--url", url, "--unique", "-n", str(WORKERS), "--wait", "5m"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESTDB_") and "DATABASE_URL" not in k}
    return subprocess.Popen(
        [*argv, "--", sys.executable, "-c", HOLD, str(hold)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_round(url: str, cwd: Path, hold: float, together: bool) -> tuple[float, list[str]]:
    """Wall time of the six runners (at once, or one after another) and their stderr."""
    started = time.perf_counter()
    errors: list[str] = []
    if together:
        procs = [runner(url, cwd, hold) for _ in range(RUNNERS)]
        errors = [proc.communicate()[1] + f"\nexit {proc.returncode}" for proc in procs]
    else:
        for _ in range(RUNNERS):
            proc = runner(url, cwd, hold)
            errors.append(proc.communicate()[1] + f"\nexit {proc.returncode}")
    return time.perf_counter() - started, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", type=float, default=2.0)
    args = parser.parse_args()
    info = local.find()
    if info is None:
        sys.exit("bench/shared_server.py: no local PostgreSQL server answers")
    admin = info.url
    role, prefix = f"bench_fleet_{secrets.token_hex(3)}", f"bench_{secrets.token_hex(3)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB CONNECTION LIMIT {}").format(sql.Identifier(role), CAP)
        )
    url = info.admin_url.set(username=role, password=None).render_as_string(hide_password=False)
    cwd = Path(tempfile.mkdtemp(prefix="testdb-bench-fleet-"))
    (cwd / "testdb.toml").write_text(f'prefix = "{prefix}"\n')
    baseline, together, peaks, waited, refused = [], [], [], 0, 0
    try:
        for _ in range(args.runs):
            baseline.append(one_round(url, cwd, args.hold, together=False)[0])
            with Peak(admin, role) as peak:
                seconds, errors = one_round(url, cwd, args.hold, together=True)
            together.append(seconds)
            peaks.append(peak.peak)
            waited += sum("waiting for" in err for err in errors)
            refused += sum("too many clients" in err or not err.endswith("exit 0") for err in errors)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for row in list_databases(conn):
                if row.name.startswith(prefix) and row.marker is not None:
                    drop_database(conn, row.name)
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    base, mine = statistics.median(baseline), statistics.median(together)
    table = Table(
        title=f"{RUNNERS} runners x -n {WORKERS}, role capped at {CAP}, hold {args.hold}s, {args.runs} rounds"
    )
    for column in ("method", "median s", "min-max s", "peak role connections", "failed runs"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row("one after another", f"{base:.2f}", f"{min(baseline):.2f}-{max(baseline):.2f}", "-", "0")
    spread = f"{min(together):.2f}-{max(together):.2f}"
    table.add_row("all at once, admitted", f"{mine:.2f}", spread, str(max(peaks)), str(refused))
    Console().print(table)
    Console().print(f"runs that waited for admission: {waited} of {RUNNERS * args.runs}")
    print(
        json.dumps(
            {
                "name": "shared-server-6x3-cap24",
                "baseline_s": round(base, 3),
                "testdb_s": round(mine, 3),
                "ratio": round(base / mine, 2),
                "peak_connections": max(peaks),
                "cap": CAP,
                "failed_runs": refused,
                "waited_runs": waited,
                "rounds": args.runs,
            }
        )
    )


if __name__ == "__main__":
    main()
