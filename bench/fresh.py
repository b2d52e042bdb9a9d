"""Fresh database per test: testdb's warm pool against CREATE DATABASE … TEMPLATE + DROP per test.

200 tests under ``pytest -p xdist -n 2 --testdb`` on the 100-table bench schema; each test
takes a fresh database, connects to it and writes a parent-child chain of rows (5 tables) in
one transaction. Baseline (pytest-postgresql's way): a function fixture that runs
``CREATE DATABASE … TEMPLATE <the run's template>`` (same clone strategy as testdb) before
the test and ``DROP DATABASE`` after it, over a per-worker admin connection. testdb: the
``testdb_fresh_url`` fixture.

Blocking time per test = the setup plus teardown durations pytest reports for the test
(the database fixture is its only fixture). Both runs use the same project, server and
template; they alternate when ``--runs`` > 1. testdb runs twice: a first run (no pytest
cache: the pools start cloning when the workers have collected) and the next run, whose
xdist controller clones spares while the workers start, as many as the first run used (the
pytest cache remembers); ``testdb_s`` is the next run's. Prints a table, then as its last line one
JSON object: name, baseline_s and testdb_s (median blocking time per test), ratio, p95s,
whole-run wall times, the pool's hand-out p95 and waits.

``--work-ms`` adds a sleep to each test after its writes, standing in for the rest of a
longer test: the pool keeps up only when tests take at least a clone's time divided by the
recycler's parallelism, and this shows the hand-out figures when it does.

    python bench/fresh.py [--server local|embedded] [--tests 200] [--workers 2] [--runs 1] [--work-ms 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provision import drop_prefixed, server_info, version_of  # noqa: E402

from testdb.fresh.stats import percentile  # noqa: E402
from testdb.servers.base import ServerInfo  # noqa: E402

CONFTEST = '''
import json, os, time, psycopg, pytest
from psycopg import sql

OUT = os.environ["BENCH_OUT"]


@pytest.fixture(scope="session")
def _admin():
    with psycopg.connect(os.environ["TESTDB_ADMIN_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def baseline_url(_admin, request):
    """pytest-postgresql's way: clone the template for this test, drop it afterwards."""
    from testdb.provision import clone_strategy
    name = "%s_b%s_%s" % (os.environ["TESTDB_PREFIX"], os.getpid(), request.node.callspec.id)
    _admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
        sql.Identifier(name), sql.Identifier(os.environ["TESTDB_TEMPLATE"]), clone_strategy(_admin)))
    url = os.environ["TESTDB_ADMIN_URL"].rsplit("/", 1)[0] + "/" + name
    yield url
    _admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(request):
    if os.environ["BENCH_MODE"] == "baseline":
        return request.getfixturevalue("baseline_url")
    return request.getfixturevalue("testdb_fresh_url").replace("+psycopg", "")


_DURATIONS = {}


def pytest_runtest_logreport(report):
    if report.when in ("setup", "teardown"):
        _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    path = os.path.join(OUT, "%s-%s.json" % (os.environ["BENCH_MODE"], os.getpid()))
    with open(path, "w") as fh:
        json.dump(_DURATIONS, fh)
'''

TEST = """
import time, psycopg, pytest

@pytest.mark.parametrize("n", range({tests}))
def test_writes(db_url, n):
    with psycopg.connect(db_url) as conn:
        parent = None
        for table in ("t000", "t001", "t003", "t007", "t015"):
            column = "" if parent is None else ", parent_id"
            values = "" if parent is None else ", %s"
            parent = conn.execute(
                f"INSERT INTO {{table}} (name{{column}}) VALUES (%s{{values}}) RETURNING id",
                ("row",) if parent is None else ("row", parent),
            ).fetchone()[0]
        conn.commit()
        assert conn.execute("SELECT count(*) FROM t015").fetchone()[0] == 1
    time.sleep({work_s})  # --work-ms: the rest of a longer test (0 by default)
"""

SUMMARY_RE = re.compile(
    r"(?:total|gw\d+|master): (\d+) hand-outs, (\d+) waits .*?hand-out p50 ([\d.]+) ms p95 ([\d.]+) ms"
    r" \(warm p95 ([\d.]+) ms\),"
    r" recycle p50 (\d+) ms, high-water (\d+)"
)


@contextmanager
def project(info: ServerInfo, prefix: str, tests: int, work_ms: int) -> Any:
    root = Path(tempfile.mkdtemp(prefix="testdb-bench-fresh-"))
    try:
        shutil.copy(HERE / "bench_schema.py", root / "bench_schema.py")
        (root / "testdb.toml").write_text(
            textwrap.dedent(f"""
                server = "url"
                url = "{info.url}"
                prefix = "{prefix}"
                [schema]
                callable = "bench_schema:create_all"
            """)
        )
        (root / "conftest.py").write_text(CONFTEST)
        (root / "test_fresh_bench.py").write_text(TEST.format(tests=tests, work_s=work_ms / 1000))
        (root / "out").mkdir()
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_once(root: Path, mode: str, workers: int) -> dict[str, Any]:
    """One pytest run; per-test blocking times, wall time, and the pool's summary line."""
    out = root / "out" / f"{mode}-{secrets.token_hex(3)}"
    out.mkdir()
    env = {
        **_clean_env(),
        "BENCH_OUT": str(out),
        "BENCH_MODE": "baseline" if mode == "baseline" else "testdb",
    }
    command = [sys.executable, "-m", "pytest", "-p", "xdist", "-n", str(workers), "--testdb", "-q"]
    command += ["-p", "no:randomly"]
    if mode == "cold":  # no demand remembered from an earlier run: no spares cloned ahead
        shutil.rmtree(root / ".pytest_cache", ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{mode} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    blocking = [s for path in out.glob("*.json") for s in json.loads(path.read_text()).values()]
    pool = _pool_line(done.stdout) if mode != "baseline" else None
    if pool is not None:  # the per-worker lines, for the record
        section = done.stdout.split("testdb fresh databases", 1)[1].split("\n-", 1)[0]
        print(section.strip("- \n"), file=sys.stderr)
    return {"blocking": blocking, "wall": wall, "pool": pool}


def _clean_env() -> dict[str, str]:
    import os

    drop = ("TESTDB_", "DATABASE_URL", "TEST_DATABASE_URL", "PYTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(HERE)
    return env


def _pool_line(stdout: str) -> dict[str, float]:
    matches = SUMMARY_RE.findall(stdout)
    if not matches:
        sys.exit("no 'testdb fresh databases' summary in the testdb run's output")
    handouts, waits, p50, p95, warm, recycle, high = matches[-1]  # 'total' comes last
    return {
        "handouts": int(handouts),
        "waits": int(waits),
        "handout_p50_ms": float(p50),
        "handout_p95_ms": float(p95),
        "warm_p95_ms": float(warm),
        "recycle_p50_ms": float(recycle),
        "high_water": int(high),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=("local", "embedded"), default="embedded")
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--work-ms", type=int, default=0, help="extra time each test spends after writing")
    args = parser.parse_args()
    info, stop = server_info(args.server)
    prefix = f"bench_fr_{secrets.token_hex(3)}"
    results: dict[str, list[dict[str, Any]]] = {"baseline": [], "cold": [], "testdb": []}
    try:
        version = version_of(info)
        with project(info, prefix, args.tests, args.work_ms) as root:
            for _ in range(args.runs):
                for mode in ("baseline", "cold", "testdb"):
                    results[mode].append(run_once(root, mode, args.workers))
    finally:
        drop_prefixed(info, prefix, templates=True)
        stop()
    report(results, args, version)


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, version: str) -> None:
    figures = {mode: _figures(runs) for mode, runs in results.items()}
    title = (
        f"{args.tests} tests, -n {args.workers}, 100-table schema, work {args.work_ms} ms,"
        f" {args.runs} run(s) each ({version})"
    )
    table = Table(title=title)
    for column in ("per test", "median ms", "p95 ms", "run wall s"):
        table.add_column(column, justify="left" if column == "per test" else "right")
    labels = {
        "baseline": "CREATE … TEMPLATE + DROP",
        "cold": "testdb_fresh_url, first run",
        "testdb": "testdb_fresh_url, next run",
    }
    for mode, fig in figures.items():
        median, p95 = f"{fig['median'] * 1000:.2f}", f"{fig['p95'] * 1000:.2f}"
        table.add_row(labels[mode], median, p95, f"{fig['wall']:.2f}")
    Console().print(table)
    for mode in ("cold", "testdb"):
        pool = results[mode][-1]["pool"]
        Console().print(
            f"pool, {labels[mode]}: {pool['handouts']} hand-outs, {pool['waits']} waits,"
            f" hand-out p50 {pool['handout_p50_ms']} ms"
            f" p95 {pool['handout_p95_ms']} ms (warm p95 {pool['warm_p95_ms']} ms),"
            f" recycle p50 {pool['recycle_p50_ms']} ms, high-water {pool['high_water']}"
        )
    pool, cold = results["testdb"][-1]["pool"], figures["cold"]
    base, ours = figures["baseline"], figures["testdb"]
    print(
        json.dumps(
            {
                "name": f"fresh-{args.server}",
                "baseline_s": round(base["median"], 5),
                "testdb_s": round(ours["median"], 5),
                "ratio": round(base["median"] / ours["median"], 1),
                "baseline_p95_s": round(base["p95"], 5),
                "testdb_p95_s": round(ours["p95"], 5),
                "baseline_wall_s": round(base["wall"], 2),
                "testdb_wall_s": round(ours["wall"], 2),
                "first_run_s": round(cold["median"], 5),
                "first_run_p95_s": round(cold["p95"], 5),
                "first_run_wall_s": round(cold["wall"], 2),
                "first_run_waits": results["cold"][-1]["pool"]["waits"],
                "handout_p95_ms": pool["handout_p95_ms"],
                "handout_warm_p95_ms": pool["warm_p95_ms"],
                "work_ms": args.work_ms,
                "waits": pool["waits"],
                "waits_pct": round(100 * pool["waits"] / max(pool["handouts"], 1), 2),
                "tests": args.tests,
                "workers": args.workers,
                "machine": f"{platform.machine()}, {version}",
            }
        )
    )


def _figures(runs: list[dict[str, Any]]) -> dict[str, float]:
    blocking = [s for run in runs for s in run["blocking"]]
    return {
        "median": statistics.median(blocking),
        "p95": percentile(blocking, 95),
        "wall": statistics.median(run["wall"] for run in runs),
    }


if __name__ == "__main__":
    main()
