"""The janitor: creates, marks, clones and drops databases, and tells live runs from dead ones.

Every database testdb creates carries a marker in its comment
(``COMMENT ON DATABASE … IS 'testdb:{json}'``). testdb only drops or empties databases
whose marker names the run doing it; protected names are refused whatever the marker says.

Liveness: a process-bound run (``testdb run``, pytest self-provisioning) holds a session
advisory lock ``(LOCK_NAMESPACE, key(run_id))`` for its whole life, visible to any client
in ``pg_locks``; a detached ``testdb up`` records a lease (``expires``) instead.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from testdb.errors import OwnershipError, ServerError
from testdb.naming import is_protected
from testdb.servers.base import ServerInfo, connect, connection_error, server_major_version

MARKER_PREFIX = "testdb:"
LOCK_NAMESPACE = 0x7E57DB  # first key of every advisory lock testdb takes
CLONE_RETRY_S = 5.0
MAX_PARALLEL_CLONES = 8


@dataclass
class Marker:
    """Who owns a database, stored as its comment."""

    run_id: str
    role: str  # "serial" | "worker" | "template" | "building"
    prefix: str
    user: str
    host: str
    pid: int
    created: float
    expires: float | None = None  # a lease (detached `up`); None = bound to a live process

    @classmethod
    def for_run(cls, run_id: str, role: str, prefix: str, ttl: float | None) -> Marker:
        now = time.time()
        return cls(
            run_id,
            role,
            prefix,
            getpass.getuser(),
            socket.gethostname(),
            os.getpid(),
            now,
            None if ttl is None else now + ttl,
        )

    def with_role(self, role: str) -> Marker:
        return Marker(**{**asdict(self), "role": role})

    def comment(self) -> str:
        return MARKER_PREFIX + json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def parse(cls, comment: str | None) -> Marker | None:
        if not comment or not comment.startswith(MARKER_PREFIX):
            return None
        try:
            return cls(**json.loads(comment[len(MARKER_PREFIX) :]))
        except (TypeError, ValueError):
            return None

    @property
    def owner(self) -> str:
        return f"run {self.run_id} ({self.user}@{self.host}, pid {self.pid})"


@dataclass(frozen=True)
class DatabaseRow:
    name: str
    marker: Marker | None
    connections: int


def lock_key(run_id: str) -> int:
    """The second advisory-lock key for a run: 32 bits of its id, as a signed int4."""
    value = int(run_id[:8], 16)
    return value - 2**32 if value >= 2**31 else value


def _unsigned(key: int) -> int:
    return key + 2**32 if key < 0 else key


class RunLock:
    """Holds a run's liveness lock on a dedicated connection for as long as it is open."""

    def __init__(self, info: ServerInfo, run_id: str) -> None:
        self.info, self.run_id = info, run_id
        self.conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> RunLock:
        self.conn = connect(self.info.admin_url)
        self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, lock_key(self.run_id)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()  # closing the session releases the lock


def live_lock_keys(conn: psycopg.Connection[Any]) -> set[int]:
    rows = conn.execute(
        "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 2 AND classid = %s::oid",
        (LOCK_NAMESPACE,),
    ).fetchall()
    return {int(r[0]) for r in rows}


def is_alive(marker: Marker, live_keys: set[int], now: float | None = None) -> bool:
    """A run is alive while it holds its lock, or while its lease has not expired."""
    if _unsigned(lock_key(marker.run_id)) in live_keys:
        return True
    if marker.expires is None:
        return False
    return (now or time.time()) < marker.expires


def list_databases(conn: psycopg.Connection[Any]) -> list[DatabaseRow]:
    """Every database on the server with its marker (None if not testdb's) and session count."""
    rows = conn.execute(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database'),"
        " (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid())"
        " FROM pg_database d ORDER BY d.datname"
    ).fetchall()
    return [DatabaseRow(name, Marker.parse(comment), int(n)) for name, comment, n in rows]


def set_marker(conn: psycopg.Connection[Any], name: str, marker: Marker) -> None:
    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker.comment()))
    )


def check_names_free(
    conn: psycopg.Connection[Any], names: Sequence[str], run_id: str, default_database: str
) -> list[str]:
    """Refuse names that are protected, unmarked, or held by a live run.

    Returns the names held by *dead* testdb runs: the caller may reclaim them.
    """
    existing = {row.name: row for row in list_databases(conn)}
    live = live_lock_keys(conn)
    reclaim = []
    for name in names:
        if is_protected(name, default_database):
            raise OwnershipError(f"refusing to use protected database {name!r}", hint="choose another prefix")
        row = existing.get(name)
        if row is None:
            continue
        if row.marker is None:
            raise OwnershipError(
                f"database {name!r} already exists and is not testdb's; leaving it alone",
                hint="choose another prefix (--prefix) or drop that database yourself",
            )
        if row.marker.run_id != run_id and is_alive(row.marker, live):
            raise OwnershipError(
                f"database {name!r} belongs to live {row.marker.owner}",
                hint='wait for it, run with --unique (names = "unique"), or use another prefix',
            )
        if row.connections:
            raise OwnershipError(
                f"database {name!r} of dead {row.marker.owner} has {row.connections} open connection(s)",
                hint="close them, or 'testdb prune --force' to drop it anyway",
            )
        reclaim.append(name)
    return reclaim


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    """DROP … WITH (FORCE): ends stray sessions instead of failing on them."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def drop_owned(
    conn: psycopg.Connection[Any], names: Iterable[str], run_id: str | None, default_database: str
) -> list[str]:
    """Drop those of ``names`` that carry testdb's marker (for ``run_id``, if given)."""
    markers = {row.name: row.marker for row in list_databases(conn)}
    dropped = []
    for name in names:
        marker = markers.get(name)
        if marker is None or is_protected(name, default_database):
            continue
        if run_id is not None and marker.run_id != run_id:
            continue
        dropped.append(name)
    for name in dropped:
        drop_database(conn, name)
    return dropped


def clone_strategy(conn: psycopg.Connection[Any]) -> sql.Composable:
    """The faster CREATE DATABASE strategy for this server, as measured (docs/benchmarks.md).

    FILE_COPY copies files and forces a checkpoint: cheap when fsync is off (the embedded
    and Docker servers), slow on a durable server, where WAL_LOG (the 15+ default) wins.
    Servers before 15 have only one strategy.
    """
    if server_major_version(conn) < 15:
        return sql.SQL("")
    row = conn.execute("SELECT current_setting('fsync')").fetchone()
    fsync_off = row is not None and row[0] == "off"
    return sql.SQL(" STRATEGY FILE_COPY") if fsync_off else sql.SQL(" STRATEGY WAL_LOG")


def _clone_one(
    conn: psycopg.Connection[Any],
    name: str,
    template: str,
    marker: Marker,
    strategy: sql.Composable,
) -> None:
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
        sql.Identifier(name), sql.Identifier(template), strategy
    )
    deadline = time.monotonic() + CLONE_RETRY_S
    while True:
        try:
            conn.execute(statement)
            break
        except psycopg.errors.ObjectInUse:
            # "source database is being accessed by other users": a closing session of the
            # template's builder or of another tool; it goes away within milliseconds.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    set_marker(conn, name, marker)


@contextlib.contextmanager
def _connections(info: ServerInfo, count: int) -> Iterator[list[psycopg.Connection[Any]]]:
    conns: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(count):
            conns.append(connect(info.admin_url))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def clone_databases(info: ServerInfo, names: dict[str, str], template: str, marker: Marker) -> None:
    """Create every database in ``names`` (name -> role) from ``template``, in parallel.

    All or nothing: if one clone fails, those already made are dropped before raising.
    """
    parallel = max(1, min(MAX_PARALLEL_CLONES, len(names)))
    created: list[str] = []
    with _connections(info, parallel) as conns:
        strategy = clone_strategy(conns[0])
        jobs = list(names.items())

        def work(slot: int) -> None:
            for name, role in jobs[slot::parallel]:
                _clone_one(conns[slot], name, template, marker.with_role(role), strategy)
                created.append(name)

        try:
            with ThreadPoolExecutor(parallel) as pool:
                for future in [pool.submit(work, i) for i in range(parallel)]:
                    future.result()
        except BaseException as exc:
            for name in created:
                with contextlib.suppress(psycopg.Error):
                    drop_database(conns[0], name)
            if isinstance(exc, psycopg.OperationalError):
                raise connection_error(info.admin_url, exc) from None
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                raise missing_createdb(conns[0].info.user, exc) from None
            if isinstance(exc, psycopg.Error):
                raise ServerError(f"creating databases failed: {exc.diag.message_primary or exc}") from None
            raise


def missing_createdb(role: str, exc: psycopg.Error) -> ServerError:
    """The one-line refusal when ``role`` may not create databases, naming the grant."""
    return ServerError(
        f"role {role!r} lacks CREATEDB: {exc.diag.message_primary or exc}",
        hint=f"{role} lacks CREATEDB: a superuser grants it with ALTER ROLE {role} CREATEDB",
    )


def connection_budget(conn: psycopg.Connection[Any], workers: int, headroom: int) -> tuple[int, int]:
    """Per-worker (pool_size, max_overflow) so that workers x pool fits ``max_connections``.

    Each worker needs one connection for cleaning plus its pool; ``headroom`` connections
    stay free for everyone else.
    """
    row = conn.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int,"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
    ).fetchone()
    assert row is not None
    available = int(row[0]) - int(row[1]) - headroom
    per_worker = available // max(workers, 1)
    if per_worker < 2:
        most = max(available // 2, 0)
        raise ServerError(
            f"too many workers: {workers} workers need {2 * workers} connections, the server has"
            f" {max(available, 0)} free (max_connections)",
            hint=f"use -n {most} or fewer, or raise max_connections on the server",
        )
    pool = max(1, min(5, (per_worker - 1) * 2 // 3))
    overflow = max(0, min(10, per_worker - 1 - pool))
    return pool, overflow


def terminate_sessions(conn: psycopg.Connection[Any], database: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )
