"""Databases: create from a template, mark, check names, drop; and the connection budget.

Who owns a database and whether its run is alive is :mod:`testdb.ownership`'s business;
this module only acts on what that says: it drops or reuses only databases whose marker
names the run doing it (or a dead run), and never protected names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from testdb.errors import OwnershipError, ServerError
from testdb.naming import is_protected
from testdb.ownership import DatabaseRow, Liveness, Marker, Role, list_databases, set_marker
from testdb.servers.base import ServerInfo, connect, connection_error, server_major_version

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

CLONE_RETRY_S = 5.0
MAX_PARALLEL_CLONES = 8


def check_names_free(
    conn: psycopg.Connection[Any], names: Sequence[str], run_id: str, default_database: str
) -> list[str]:
    """Refuse names that are protected, unmarked, or held by a live run.

    Returns the names held by *dead* testdb runs: the caller may reclaim them.
    """
    existing = {row.name: row for row in list_databases(conn)}
    liveness = Liveness.read(conn)
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
        if row.marker.run_id != run_id and liveness.alive(row.marker):
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
    from psycopg import sql

    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def owned_names(
    rows: Iterable[DatabaseRow], names: Iterable[str], run_id: str | None, default_database: str
) -> list[str]:
    """Those of ``names`` that carry testdb's marker (for ``run_id``, if given): safe to drop."""
    markers = {row.name: row.marker for row in rows}
    dropped = []
    for name in names:
        marker = markers.get(name)
        if marker is None or is_protected(name, default_database):
            continue
        if run_id is not None and marker.run_id != run_id:
            continue
        dropped.append(name)
    return dropped


def drop_databases(info: ServerInfo, names: Sequence[str]) -> None:
    """Drop ``names`` in parallel: on a durable server each DROP waits for a checkpoint."""
    if not names:
        return
    parallel = max(1, min(MAX_PARALLEL_CLONES, len(names)))
    with _connections(info, parallel) as conns, ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(_drop_slice, conns[i], names[i::parallel]) for i in range(parallel)]
        for future in futures:
            future.result()


def _drop_slice(conn: psycopg.Connection[Any], names: Sequence[str]) -> None:
    for name in names:
        drop_database(conn, name)


def clone_strategy(conn: psycopg.Connection[Any]) -> sql.Composable:
    """The faster CREATE DATABASE strategy for this server, as measured (docs/benchmarks.md).

    FILE_COPY copies files and forces a checkpoint: cheap when fsync is off (the embedded
    and Docker servers), slow on a durable server, where WAL_LOG (the 15+ default) wins.
    Servers before 15 have only one strategy.
    """
    from psycopg import sql

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
    import psycopg
    from psycopg import sql

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


def clone_databases(info: ServerInfo, names: dict[str, Role], template: str, marker: Marker) -> None:
    """Create every database in ``names`` (name -> role) from ``template``, in parallel.

    All or nothing: if one clone fails, those already made are dropped before raising.
    """
    import psycopg

    parallel = max(1, min(MAX_PARALLEL_CLONES, len(names)))
    created: list[str] = []
    with _connections(info, parallel) as conns:
        strategy = clone_strategy(conns[0])
        jobs = list(names.items())

        def work(slot: int) -> None:
            for name, role in jobs[slot::parallel]:
                _clone_one(
                    conns[slot], name, template, replace(marker, role=role, template=template), strategy
                )
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
