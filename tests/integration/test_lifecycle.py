"""Bringing runs up and down on real servers (local and embedded, via ``pg_server``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from testdb import lifecycle
from testdb.config import Settings
from testdb.errors import OwnershipError, ServerError
from testdb.ownership import Marker, list_databases, set_marker
from testdb.servers.base import ServerInfo, admin_connection


def _up(settings: Settings, tmp_path: Path, workers: int = 2, unique: bool = False):  # type: ignore[no-untyped-def]
    return lifecycle.up(
        settings, lifecycle.Request(workers, unique, root=tmp_path), progress=lifecycle.Progress()
    )


def test_up_creates_serial_and_worker_databases(
    make_settings: Callable[..., Settings],
    prefix: str,
    tmp_path: Path,
    database_names: Callable[[], set[str]],
) -> None:
    state = _up(make_settings(), tmp_path, workers=3)
    assert {prefix, f"{prefix}_gw0", f"{prefix}_gw1", f"{prefix}_gw2"} <= database_names()
    lifecycle.teardown(state)


def test_every_created_database_carries_the_run_marker(
    make_settings: Callable[..., Settings], pg_server: ServerInfo, tmp_path: Path
) -> None:
    state = _up(make_settings(), tmp_path)
    with admin_connection(pg_server) as conn:
        markers = {row.name: row.marker for row in list_databases(conn)}
    for name in state.databases:
        marker = markers[name]
        assert marker is not None
        assert marker.run_id == state.run_id
    lifecycle.teardown(state)


def test_down_drops_everything_the_run_created(
    make_settings: Callable[..., Settings], tmp_path: Path, database_names: Callable[[], set[str]]
) -> None:
    state = _up(make_settings(), tmp_path)
    dropped = lifecycle.teardown(state)
    assert sorted(dropped) == sorted(state.databases)
    assert not set(state.databases) & database_names()


def test_down_succeeds_when_a_database_was_dropped_behind_its_back(
    make_settings: Callable[..., Settings],
    pg_server: ServerInfo,
    tmp_path: Path,
    database_names: Callable[[], set[str]],
) -> None:
    state = _up(make_settings(), tmp_path)
    with admin_connection(pg_server) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(state.workers["gw0"])))
    lifecycle.teardown(state)
    assert not set(state.databases) & database_names()


def test_worker_urls_connect_to_their_own_database(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    state = _up(settings, tmp_path)
    env = lifecycle.environment(state, settings)
    for worker, name in state.workers.items():
        with psycopg.connect(env[f"TESTDB_WORKER_URL_{worker.upper()}"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    lifecycle.teardown(state)


def test_existing_unmarked_database_is_refused_and_left_alone(
    make_settings: Callable[..., Settings],
    pg_server: ServerInfo,
    prefix: str,
    tmp_path: Path,
    database_names: Callable[[], set[str]],
) -> None:
    with admin_connection(pg_server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"{prefix}_gw1")))
    try:
        with pytest.raises(OwnershipError, match=f"'{prefix}_gw1' already exists and is not testdb's"):
            _up(make_settings(), tmp_path)
        names = database_names()
        assert f"{prefix}_gw1" in names
        assert prefix not in names and f"{prefix}_gw0" not in names
    finally:
        with admin_connection(pg_server) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(f"{prefix}_gw1")))


def test_live_run_blocks_plain_names(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    first = _up(make_settings(), tmp_path)
    try:
        with pytest.raises(OwnershipError, match=f"belongs to live run {first.run_id}"):
            _up(make_settings(), tmp_path)
    finally:
        lifecycle.teardown(first)


def test_unique_names_let_two_runs_share_a_server(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    first = _up(make_settings(), tmp_path, unique=True)
    second = _up(make_settings(), tmp_path, unique=True)
    assert not set(first.databases) & set(second.databases)
    lifecycle.teardown(first)
    lifecycle.teardown(second)


def test_dead_runs_databases_are_reclaimed(
    make_settings: Callable[..., Settings], pg_server: ServerInfo, prefix: str, tmp_path: Path
) -> None:
    with admin_connection(pg_server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"{prefix}_gw0")))
        set_marker(conn, f"{prefix}_gw0", Marker.for_run(secrets.token_hex(6), "worker", prefix, None))
    state = _up(make_settings(), tmp_path)
    assert state.workers["gw0"] == f"{prefix}_gw0"
    lifecycle.teardown(state)


def test_bound_run_tears_down_when_the_block_raises(
    make_settings: Callable[..., Settings], tmp_path: Path, database_names: Callable[[], set[str]]
) -> None:
    names: list[str] = []
    with (
        pytest.raises(RuntimeError),
        lifecycle.bound_run(
            make_settings(), lifecycle.Request(2, False, root=tmp_path), progress=lifecycle.Progress()
        ) as state,
    ):
        names = state.databases
        raise RuntimeError("test command failed")
    assert names
    assert not set(names) & database_names()


def test_too_many_workers_fail_before_anything_is_created(
    make_settings: Callable[..., Settings],
    prefix: str,
    tmp_path: Path,
    database_names: Callable[[], set[str]],
) -> None:
    with pytest.raises(ServerError, match="too many workers"):
        _up(make_settings(), tmp_path, workers=5000)
    assert not any(name.startswith(prefix) for name in database_names())


def test_protected_prefix_is_refused(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    with pytest.raises(OwnershipError, match="protected database 'postgres'"):
        _up(make_settings(prefix="postgres"), tmp_path)


def test_a_lazy_serial_database_is_cloned_on_first_use_and_dropped_with_the_run(
    make_settings: Callable[..., Settings], tmp_path: Path, database_names: Callable[[], set[str]]
) -> None:
    from testdb.worker import resolve_worker

    settings = make_settings()
    request = lifecycle.Request(1, False, serial=False, root=tmp_path)
    with lifecycle.bound_run(settings, request, progress=lifecycle.Progress()) as state:
        assert state.serial not in database_names()
        worker = resolve_worker(lifecycle.environment(state, settings), "master")
        assert worker.url.database == state.serial
        assert state.serial in database_names()
    assert state.serial not in database_names()
