"""Embedded server start-up: from nothing to accepting connections.

- cold: no skeleton cached (initdb runs), fresh data directory;
- skeleton: the cached initdb output is copied (the normal first run of a machine's day);
- warm: ``embedded.keep`` reuses a running cluster (checked alive and ours).
Baseline is the cold start. Runs in a private cache directory (XDG_CACHE_HOME) so it
never touches the user's skeletons or kept clusters.

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from testdb.config import EmbeddedSettings
from testdb.servers import embedded


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def cold_start() -> float:
    shutil.rmtree(embedded.skeleton_root(), ignore_errors=True)
    return skeleton_start()


def skeleton_start() -> float:
    holder: list[embedded.ServerInfo] = []
    seconds = timed(lambda: holder.append(embedded.acquire(EmbeddedSettings(), secrets.token_hex(6), [])))
    embedded.release(holder[0], force=True)
    return seconds


def warm_reuse(settings: EmbeddedSettings) -> float:
    holder: list[embedded.ServerInfo] = []
    seconds = timed(lambda: holder.append(embedded.acquire(settings, secrets.token_hex(6), [])))
    assert holder[0].keep
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="testdb-bench-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        os.chmod(cache, 0o755)
        binaries = embedded.find_binaries(EmbeddedSettings())
        cold = statistics.median(cold_start() for _ in range(args.runs))
        skeleton = statistics.median(skeleton_start() for _ in range(args.runs))
        keep = EmbeddedSettings(keep=True)
        first = embedded.acquire(keep, secrets.token_hex(6), [])
        try:
            warm = statistics.median(warm_reuse(keep) for _ in range(args.runs))
        finally:
            embedded.release(first, force=True)
    where = "RAM-backed /dev/shm" if str(embedded.runtime_root()).startswith("/dev/shm") else "disk"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, PostgreSQL {binaries.version}, data on {where}"
    table = Table(title=f"embedded start to ready, median of {args.runs} ({machine})")
    for column in ("start", "median s", "vs cold"):
        table.add_column(column, justify="right" if column != "start" else "left")
    table.add_row("cold: initdb + start", f"{cold:.3f}", "1.0x")
    table.add_row("skeleton copy + start", f"{skeleton:.3f}", f"{cold / skeleton:.1f}x faster")
    table.add_row("warm reuse of a kept cluster", f"{warm:.3f}", f"{cold / warm:.1f}x faster")
    Console().print(table)
    print(
        json.dumps(
            {
                "name": "startup",
                "baseline_s": round(cold, 4),
                "testdb_s": round(skeleton, 4),
                "ratio": round(cold / skeleton, 1),
                "warm_s": round(warm, 4),
                "warm_ratio": round(cold / warm, 1),
                "runs": args.runs,
                "machine": machine,
            }
        )
    )


if __name__ == "__main__":
    main()
