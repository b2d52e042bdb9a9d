"""CLI start-up and `testdb run` overhead against their floors (issue 13).

- ``testdb --help`` vs the ``--help`` of a minimal Typer app (bench/minimal_typer.py);
- ``testdb env`` of a run that is up, vs the same minimal app (the Python + Typer floor);
- ``testdb run -n 2 -- true`` with a warm template vs the same SQL done by two ``psql``
  calls (clone twice, then drop twice), on the local server and on a kept embedded one;
- ``pytest`` start-up of a one-test project with testdb installed and idle, vs ``-p no:testdb``.

Each figure is the median of ``--runs`` wall-clock runs of a fresh process. The JSON's
``ratio`` is the run case on local: psql floor over testdb (at most 1; 0.5 = twice the floor).

    python bench/cli.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TESTDB = str(BIN / "testdb")
PSQL = "psql"


def wall(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return elapsed


def median(runs: int, action: Callable[[], float]) -> tuple[float, float, float]:
    """(median, min, max) of ``runs`` timings."""
    samples = [action() for _ in range(runs)]
    return statistics.median(samples), min(samples), max(samples)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESTDB_") and "DATABASE_URL" not in k}
    return {**env, **extra}


def capture(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def psql_floor(admin_url: str, template: str, prefix: str) -> float:
    """Two psql calls: clone twice, then drop twice (what `run -n 2 -- true` does in SQL)."""
    names = [f"{prefix}_psql_{i}" for i in range(2)]
    clone = [f'CREATE DATABASE "{n}" TEMPLATE "{template}"' for n in names]
    drop = [f'DROP DATABASE "{n}" WITH (FORCE)' for n in names]
    started = time.perf_counter()
    for statements in (clone, drop):
        argv = [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", admin_url]
        for statement in statements:
            argv += ["-c", statement]
        subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - started


Timing = tuple[float, float, float]


def run_case(cwd: Path, server: list[str], prefix: str, runs: int) -> tuple[Timing, Timing]:
    """testdb run vs the psql floor on one server kind (template warmed first)."""
    env = clean_env()
    argv = [TESTDB, "run", *server, "--prefix", prefix, "-n", "2", "--", "true"]
    wall(argv, cwd, env)  # builds the template (and starts a kept embedded server)
    up = [TESTDB, "up", *server, "--prefix", prefix, "-n", "1", "-f", "json"]
    up_env = json.loads(capture(up, cwd, env))
    capture([TESTDB, "down"], cwd, env)
    admin, template = up_env["TESTDB_ADMIN_URL"], up_env["TESTDB_TEMPLATE"]
    testdb = median(runs, lambda: wall(argv, cwd, env))
    floor = median(runs, lambda: psql_floor(admin, template, prefix))
    return testdb, floor


def pytest_case(runs: int) -> tuple[Timing, Timing]:
    """A one-test project in a plain venv (pytest + testdb only: no other plugins' noise)."""
    uv = os.environ.get("UV") or shutil.which("uv") or str(HERE.parent / ".tools" / "bin" / "uv")
    with tempfile.TemporaryDirectory(prefix="testdb-bench-pytest-") as tmp:
        root = Path(tmp)
        subprocess.run([uv, "venv", "-q", str(root / "venv")], check=True)
        python = str(root / "venv" / "bin" / "python")
        subprocess.run([uv, "pip", "install", "-q", "-p", python, "pytest", str(HERE.parent)], check=True)
        (root / "test_one.py").write_text("def test_one():\n    assert True\n")
        env = clean_env(PYTHONDONTWRITEBYTECODE="1")
        base = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"]
        wall(base, root, env)  # warm the page cache
        idle = median(runs, lambda: wall(base, root, env))
        without = median(runs, lambda: wall([*base, "-p", "no:testdb"], root, env))
    return idle, without


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    prefix = f"bcli_{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="testdb-bench-cli-") as tmp:
        cwd = Path(tmp)
        os.chmod(cwd, 0o755)
        env = clean_env()
        floor_app = [sys.executable, str(HERE / "minimal_typer.py"), "--help"]
        minimal = median(args.runs, lambda: wall(floor_app, cwd))
        helped = median(args.runs, lambda: wall([TESTDB, "--help"], cwd, env))
        capture([TESTDB, "up", "--server", "local", "--prefix", prefix, "-n", "2"], cwd, env)
        try:
            env_s = median(args.runs, lambda: wall([TESTDB, "env"], cwd, env))
        finally:
            capture([TESTDB, "down", "--templates"], cwd, env)
        local_run, local_floor = run_case(cwd, ["--server", "local"], prefix, args.runs)
        embedded = ["--server", "embedded", "--keep-server"]
        try:
            emb_run, emb_floor = run_case(cwd, embedded, prefix, args.runs)
        finally:
            for server in (embedded, ["--server", "local"]):  # leave no template, no kept server
                quiet([TESTDB, "up", *server, "--prefix", prefix, "-n", "1"], cwd, env)
                quiet([TESTDB, "down", "--stop-server", "--templates"], cwd, env)
    idle, without = pytest_case(args.runs)
    report(args.runs, minimal, helped, env_s, local_run, local_floor, emb_run, emb_floor, idle, without)


def quiet(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, check=False)


def fmt(t: Timing) -> str:
    return f"{t[0]:.3f} ({t[1]:.3f}-{t[2]:.3f})"


def report(  # type: ignore[no-untyped-def]
    runs: int, minimal, helped, env_s, local_run, local_floor, emb_run, emb_floor, idle, without
) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    table = Table(title=f"CLI start-up and run overhead, median (min-max) of {runs} runs ({machine})")
    for column in ("case", "baseline s", "testdb s", "baseline / testdb"):
        table.add_column(column, justify="left" if column == "case" else "right")
    rows = [
        ("testdb --help vs minimal Typer --help", minimal, helped),
        ("testdb env (run up) vs minimal Typer --help", minimal, env_s),
        ("run -n 2 -- true, local, vs psql floor", local_floor, local_run),
        ("run -n 2 -- true, kept embedded, vs psql floor", emb_floor, emb_run),
        ("pytest start-up, plugin idle, vs -p no:testdb", without, idle),
    ]
    for name, base, ours in rows:
        table.add_row(name, fmt(base), fmt(ours), f"{base[0] / ours[0]:.2f}")
    Console().print(table)
    print(f"pytest start-up cost of the idle plugin: {(idle[0] - without[0]) * 1000:+.0f} ms")
    print(
        json.dumps(
            {
                "name": "cli",
                "baseline_s": round(local_floor[0], 4),
                "testdb_s": round(local_run[0], 4),
                "ratio": round(local_floor[0] / local_run[0], 2),
                "help_s": round(helped[0], 4),
                "minimal_help_s": round(minimal[0], 4),
                "env_s": round(env_s[0], 4),
                "embedded_run_s": round(emb_run[0], 4),
                "embedded_floor_s": round(emb_floor[0], 4),
                "pytest_idle_s": round(idle[0], 4),
                "pytest_idle_cost_ms": round((idle[0] - without[0]) * 1000, 1),
                "pytest_without_s": round(without[0], 4),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
