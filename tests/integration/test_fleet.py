"""The fleet view on real servers: every run, read from markers, locks and sessions."""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from psycopg import sql

from testdb import lifecycle
from testdb.admission import AdmissionError, label_session, reserve
from testdb.config import Settings, load_settings
from testdb.fleet import FleetRun, fleet
from testdb.ownership import Marker, RunLock, set_marker
from testdb.servers.base import ServerInfo, admin_connection, connect


def _run(info: ServerInfo, run_id: str) -> FleetRun:
    found = [run for run in fleet(info).runs if run.run_id.startswith(run_id[:8])]
    assert len(found) == 1, fleet(info).runs
    return found[0]


def _create_marked(info: ServerInfo, name: str, marker: Marker) -> None:
    with admin_connection(info) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        set_marker(conn, name, marker)


def test_a_bound_run_shows_its_lock_reservation_owner_and_databases(
    make_settings: Callable[..., Settings], pg_server: ServerInfo, tmp_path: Path
) -> None:
    progress = lifecycle.Progress()
    request = lifecycle.Request(2, unique=True, root=tmp_path)
    with lifecycle.bound_run(make_settings(), request, progress=progress) as state:
        run = _run(pg_server, state.run_id)
    assert (run.liveness, len(run.databases)) == ("lock", 3)
    assert run.reserved >= 2 + 2 * 2
    assert run.owner == state.owner


def test_a_run_without_lock_or_lease_is_dead(pg_server: ServerInfo, prefix: str) -> None:
    run_id = secrets.token_hex(6)
    _create_marked(pg_server, f"{prefix}_gw0", Marker.for_run(run_id, "worker", prefix, None))
    assert _run(pg_server, run_id).liveness == "dead"


def test_a_detached_run_is_alive_by_its_lease(pg_server: ServerInfo, prefix: str) -> None:
    run_id = secrets.token_hex(6)
    _create_marked(pg_server, f"{prefix}_gw0", Marker.for_run(run_id, "worker", prefix, 3 * 3600))
    assert _run(pg_server, run_id).liveness.startswith("lease 2h59m")


def test_a_run_that_has_no_database_yet_is_named_by_its_lock_connection(pg_server: ServerInfo) -> None:
    run_id = secrets.token_hex(6)
    with RunLock(lambda: connect(pg_server.admin_url), run_id) as lock:
        assert lock.conn is not None
        label_session(lock.conn, run_id)
        run = _run(pg_server, run_id)
    assert (run.liveness, run.databases, run.connections) == ("lock", [], 1)
    assert "@" in run.owner and run.pid is not None


def test_templates_are_listed_apart_from_runs(pg_server: ServerInfo, prefix: str) -> None:
    run_id = secrets.token_hex(6)
    _create_marked(pg_server, f"{prefix}_tpl_0123", Marker.for_run(run_id, "template", prefix, None))
    seen = fleet(pg_server)
    assert f"{prefix}_tpl_0123" in [row.name for row in seen.templates]
    assert not [run for run in seen.runs if run.run_id == run_id]


def test_a_run_waiting_for_admission_shows_as_waiting(
    capped_role: Callable[[int], ServerInfo], tmp_path: Path
) -> None:
    info = capped_role(12)
    settings = load_settings(tmp_path, {"admission": {"wait": 10}, "max_connections_headroom": 0})
    waiting = threading.Event()
    run_id = secrets.token_hex(6)

    def second_run() -> None:
        with RunLock(lambda: connect(info.admin_url), run_id) as lock, contextlib.suppress(AdmissionError):
            reserve(info, 3, settings, lambda _: waiting.set(), conn=lock.conn, run_id=run_id).__enter__()

    with connect(info.admin_url) as first, reserve(info, 3, settings, lambda _: None, conn=first):
        thread = threading.Thread(target=second_run)
        thread.start()
        assert waiting.wait(10)
        run = _run(info, run_id)
    thread.join()  # admitted once the first run let go
    assert (run.liveness, run.waiting, run.reserved) == ("lock", True, 0)
