"""`testdb prune` after a SIGKILLed run: exactly that run's leftovers, never a live run's."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg

from ._cli import Cli, finish, start, wait_for
from ._db import database_names


def _kill_run_once_up(tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]) -> set[str]:
    """Start `testdb run --unique` with a sleeping command, SIGKILL it once its databases exist."""
    proc = start(
        ["run", "--server", "local", "--prefix", prefix, "--unique", "-n", "2", "--", "sleep", "60"],
        cwd=tmp_path,
    )
    try:
        wait_for(
            lambda: len(database_names(admin, prefix)) >= 4 or proc.poll() is not None,
            60,
            "the run's databases",
        )
        assert proc.poll() is None, finish(proc)
        names = {n for n in database_names(admin, prefix) if "_tpl_" not in n}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return names


def _live_and_killed_runs(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> tuple[set[str], set[str]]:
    """A detached run that stays up in ./live, and a run SIGKILLed in ./dead: their databases."""
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    assert cli("up", "--server", "local", "--prefix", prefix, "--unique", "-n", "1", cwd=live_dir).code == 0
    live = {n for n in database_names(admin, prefix) if "_tpl_" not in n}
    dead_dir = tmp_path / "dead"
    dead_dir.mkdir()
    return live, _kill_run_once_up(dead_dir, prefix, admin) - live


def test_prune_dry_run_lists_exactly_the_killed_runs_databases(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    _live, killed = _live_and_killed_runs(cli, tmp_path, prefix, admin)

    listed = cli("prune", "--dry-run", "--prefix", prefix, "--server", "local", cwd=tmp_path)

    assert listed.code == 0, listed.err
    assert set(listed.out.split()) == killed
    assert killed <= database_names(admin, prefix)


def test_prune_removes_the_killed_run_and_spares_the_live_one(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    live, killed = _live_and_killed_runs(cli, tmp_path, prefix, admin)

    pruned = cli("prune", "--prefix", prefix, "--server", "local", cwd=tmp_path)

    assert pruned.code == 0, pruned.err
    remaining = database_names(admin, prefix)
    assert not killed & remaining
    assert live <= remaining
    assert cli("down", cwd=tmp_path / "live").code == 0
