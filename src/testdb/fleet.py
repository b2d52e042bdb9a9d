"""The fleet view: every testdb run on a server, whoever and wherever started it.

Read from the server alone, so it sees runs on other machines: databases' markers (run,
owner ``user@host``, pid, created, lease), ``pg_locks`` (who holds a liveness lock, how
many admission slots, who waits in the queue) and ``pg_stat_activity`` (open connections,
and the application name a run's lock connection carries while it has no database yet).
Nothing here holds a password: the rows name runs, hosts and databases only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testdb.admission import SLOT_NAMESPACE, TICKET_NAMESPACE
from testdb.ownership import LOCK_NAMESPACE, DatabaseRow, list_databases
from testdb.servers.base import ServerInfo, admin_connection

if TYPE_CHECKING:
    import psycopg

    from testdb.config import Settings


@dataclass
class FleetRun:
    """One run as the server sees it."""

    run_id: str
    prefix: str = "?"
    owner: str = "?"  # user@host
    pid: int | None = None
    started: float | None = None
    expires: float | None = None
    locked: bool = False  # holds its liveness lock right now
    reserved: int = 0  # admission slots (connections) it holds
    waiting: bool = False  # queued for admission
    databases: list[str] = field(default_factory=list)
    connections: int = 0

    @property
    def alive(self) -> bool:
        return self.locked or (self.expires is not None and time.time() < self.expires)

    @property
    def liveness(self) -> str:
        """``lock``, ``lease 3h59m``, or ``dead``: how the server knows it is alive."""
        if self.locked:
            return "lock"
        if self.expires is not None and time.time() < self.expires:
            return f"lease {_span(self.expires - time.time())}"
        return "dead"


@dataclass
class Fleet:
    runs: list[FleetRun]
    templates: list[DatabaseRow]


def _span(seconds: float) -> str:
    minutes = int(seconds) // 60
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


_LOCK_HOLDERS_SQL = """
SELECT l.pid, l.classid::bigint, l.objid::bigint, a.application_name,
       extract(epoch FROM a.backend_start)::float8
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid::bigint IN (%s, %s, %s)
"""


def _run_for(runs: dict[str, FleetRun], key: int) -> FleetRun:
    """The run whose liveness-lock key is ``key`` (its id's first 8 hex digits)."""
    prefix = f"{key:08x}"
    for run_id, run in runs.items():
        if run_id.startswith(prefix):
            return run
    return runs.setdefault(prefix, FleetRun(prefix))


def _from_markers(rows: list[DatabaseRow]) -> dict[str, FleetRun]:
    runs: dict[str, FleetRun] = {}
    for row in rows:
        marker = row.marker
        if marker is None or marker.role == "template":
            continue
        run = runs.setdefault(marker.run_id, FleetRun(marker.run_id))
        run.prefix, run.owner, run.pid = marker.prefix, f"{marker.user}@{marker.host}", marker.pid
        run.started = min(run.started or marker.created, marker.created)
        if marker.role != "failed":  # a kept failed test's database has a lease of its own
            run.expires = marker.expires
        run.databases.append(row.name)
        run.connections += row.connections
    return runs


def _from_locks(conn: psycopg.Connection[Any], runs: dict[str, FleetRun]) -> None:
    rows = conn.execute(_LOCK_HOLDERS_SQL, (LOCK_NAMESPACE, TICKET_NAMESPACE, SLOT_NAMESPACE)).fetchall()
    run_by_pid: dict[int, FleetRun] = {}
    for pid, namespace, key, app, started in rows:
        if namespace != LOCK_NAMESPACE:
            continue
        run = run_by_pid[pid] = _run_for(runs, int(key))
        run.locked = True
        run.connections += 1  # the lock connection itself
        if run.owner == "?":
            run.owner, run.pid, run.started = _from_label(app, started)
    for pid, namespace, _key, _app, _started in rows:
        holder = run_by_pid.get(pid)
        if holder is not None and namespace == SLOT_NAMESPACE:
            holder.reserved += 1
        elif holder is not None and namespace == TICKET_NAMESPACE:
            holder.waiting = True


def _from_label(app: str | None, started: float | None) -> tuple[str, int | None, float | None]:
    """Owner and pid from a lock connection's application name (``testdb ID PID user@host``)."""
    parts = (app or "").split()
    if len(parts) == 4 and parts[0] == "testdb" and parts[2].isdigit():
        return parts[3], int(parts[2]), started
    return "?", None, started


def fleet(info: ServerInfo) -> Fleet:
    """Every testdb run on ``info`` (live and dead) and the cached templates."""
    with admin_connection(info) as conn:
        rows = list_databases(conn)
        runs = _from_markers(rows)
        _from_locks(conn, runs)
    templates = [row for row in rows if row.marker is not None and row.marker.role == "template"]
    ordered = sorted(runs.values(), key=lambda run: (not run.alive, run.started or 0.0))
    return Fleet(ordered, templates)


def fleet_server(settings: Settings, *, explicit: bool) -> ServerInfo | None:
    """The server to look at: the one named (``--url``/``--server``), else the recorded
    run's, else one that is already running here. Never starts one."""
    from testdb.servers import find_server
    from testdb.state import load_state

    state = None if explicit else load_state(settings.state_dir)
    return state.server if state is not None else find_server(settings)
