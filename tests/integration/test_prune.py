"""Reclaiming what dead runs left, and never what live runs or strangers own."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from psycopg import sql

from testdb import lifecycle
from testdb.config import Settings
from testdb.ownership import Marker, RunLock, set_marker
from testdb.prune import prune_databases as prune
from testdb.servers.base import ServerInfo, admin_connection, connect


def _create(info: ServerInfo, name: str, marker: Marker | None) -> None:
    with admin_connection(info) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if marker is not None:
            set_marker(conn, name, marker)


def _drop_unmarked(info: ServerInfo, name: str) -> None:
    with admin_connection(info) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_dead_bound_run_is_pruned(
    pg_server: ServerInfo, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    _create(pg_server, f"{prefix}_gw0", Marker.for_run(secrets.token_hex(6), "worker", prefix, None))
    report = prune(pg_server, prefix=prefix)
    assert report.dropped == [f"{prefix}_gw0"]
    assert f"{prefix}_gw0" not in database_names()


def test_run_holding_its_lock_is_left_alone(
    pg_server: ServerInfo, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    run_id = secrets.token_hex(6)
    _create(pg_server, f"{prefix}_gw0", Marker.for_run(run_id, "worker", prefix, None))
    with RunLock(lambda: connect(pg_server.admin_url), run_id):
        assert prune(pg_server, prefix=prefix).dropped == []
    assert f"{prefix}_gw0" in database_names()


def test_unexpired_lease_is_left_alone(pg_server: ServerInfo, prefix: str) -> None:
    _create(pg_server, f"{prefix}_gw0", Marker.for_run(secrets.token_hex(6), "worker", prefix, ttl=3600))
    assert prune(pg_server, prefix=prefix).dropped == []


def test_expired_lease_is_pruned(pg_server: ServerInfo, prefix: str) -> None:
    marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, ttl=1)
    marker.expires = time.time() - 1
    _create(pg_server, f"{prefix}_gw0", marker)
    assert prune(pg_server, prefix=prefix).dropped == [f"{prefix}_gw0"]


def test_unmarked_database_is_never_pruned(
    pg_server: ServerInfo, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    _create(pg_server, f"{prefix}_mine", None)
    try:
        assert prune(pg_server, prefix=prefix).dropped == []
        assert prune(pg_server).dropped.count(f"{prefix}_mine") == 0
        assert f"{prefix}_mine" in database_names()
    finally:
        _drop_unmarked(pg_server, f"{prefix}_mine")


def test_database_with_connections_is_skipped_unless_forced(pg_server: ServerInfo, prefix: str) -> None:
    name = f"{prefix}_gw0"
    _create(pg_server, name, Marker.for_run(secrets.token_hex(6), "worker", prefix, None))
    with connect(pg_server.database_url(name)):
        report = prune(pg_server, prefix=prefix)
        assert report.dropped == []
        assert [row.name for row in report.busy] == [name]
        assert prune(pg_server, prefix=prefix, force=True).dropped == [name]


def test_dry_run_lists_without_dropping(
    pg_server: ServerInfo, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    _create(pg_server, f"{prefix}_gw0", Marker.for_run(secrets.token_hex(6), "worker", prefix, None))
    assert prune(pg_server, prefix=prefix, dry_run=True).dropped == [f"{prefix}_gw0"]
    assert f"{prefix}_gw0" in database_names()


def test_templates_are_kept_unless_asked(pg_server: ServerInfo, prefix: str) -> None:
    _create(
        pg_server,
        f"{prefix}_tpl_0123456789ab",
        Marker.for_run(secrets.token_hex(6), "template", prefix, None),
    )
    assert prune(pg_server, prefix=prefix).dropped == []
    assert prune(pg_server, prefix=prefix, templates=True).dropped == [f"{prefix}_tpl_0123456789ab"]


def test_bound_run_prunes_dead_runs_of_its_prefix_first(
    make_settings: Callable[..., Settings],
    pg_server: ServerInfo,
    prefix: str,
    tmp_path: Path,
    database_names: Callable[[], set[str]],
) -> None:
    _create(pg_server, f"{prefix}_abcdef_gw5", Marker.for_run(secrets.token_hex(6), "worker", prefix, None))
    progress = lifecycle.Progress()
    with lifecycle.bound_run(make_settings(), lifecycle.Request(1, False, root=tmp_path), progress=progress):
        assert f"{prefix}_abcdef_gw5" not in database_names()
    assert "reclaimed 1 databases of dead runs" in progress.notices


def test_templates_go_with_templates_flag_even_within_the_builders_lease(
    pg_server: ServerInfo, prefix: str
) -> None:
    _create(
        pg_server,
        f"{prefix}_tpl_0123456789ab",
        Marker.for_run(secrets.token_hex(6), "template", prefix, 3600),
    )
    assert prune(pg_server, prefix=prefix).dropped == []
    assert prune(pg_server, prefix=prefix, templates=True).dropped == [f"{prefix}_tpl_0123456789ab"]
