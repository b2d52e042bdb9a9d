"""The main job as plain functions: bring a run up, describe it, tear it down.

``cli.py`` and ``pytest_plugin.py`` are thin layers over these. A *detached* run
(``testdb up``) records a lease and a state file; a *bound* run (``testdb run``, pytest
self-provisioning) holds its liveness lock for as long as the ``bound_run`` block lasts and
always tears down in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from testdb.config import Settings
from testdb.envvars import Target, replacement_environment, run_environment, target_environment
from testdb.errors import OwnershipError, ServerError, StateError, TestdbError
from testdb.fresh.pool import unmarked_clones
from testdb.naming import SERIAL_WORKER, database_names, is_protected, new_run_id, validate_prefix, worker_ids
from testdb.provision import (
    DatabaseRow,
    Marker,
    RunLock,
    check_names_free,
    clone_databases,
    connection_budget,
    drop_database,
    drop_owned,
    is_alive,
    list_databases,
    live_lock_keys,
    set_marker,
)
from testdb.prune import prune as prune_dead
from testdb.redisdb import redis_urls
from testdb.servers import acquire_server, embedded, release_server
from testdb.servers.base import ServerInfo, admin_connection, connection_error, describe, pid_alive
from testdb.signals import shielded
from testdb.state import RunState
from testdb.template import ensure_template

if TYPE_CHECKING:
    from testdb.clean import CleanReport


@dataclass
class Progress:
    """What a run reports as it goes: notices (printed once) and phase timings."""

    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    template_built: bool | None = None
    server_lost: str | None = None  # set when our own server died during the run

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


def check_request(settings: Settings, workers: int, unique: bool) -> None:
    """Everything that can be refused before a server is touched."""
    if workers < 1:
        raise TestdbError(f"-n must be at least 1, got {workers}", hint="use -n N with N >= 1 workers")
    validate_prefix(settings.prefix, workers, unique)


def provision(
    settings: Settings,
    info: ServerInfo,
    run_id: str,
    workers: int,
    *,
    unique: bool,
    bound: bool,
    root: Path,
    progress: Progress,
) -> RunState:
    """Template and clones for one run on ``info``; all or nothing."""
    with admin_connection(info) as conn:
        pool = connection_budget(conn, workers, settings.max_connections_headroom)
        names = database_names(settings.prefix, workers, run_id if unique else None)
        reclaim = check_names_free(conn, names.all(), run_id, info.default_database)
        for name in reclaim:  # left by dead runs: theirs to lose
            drop_database(conn, name)
    redis = (
        redis_urls(
            settings.redis.url,
            worker_ids(workers),
            settings.redis.serial_db,
            first_db=settings.redis.first_db,
        )
        if settings.redis.url
        else {}
    )
    marker = Marker.for_run(run_id, "worker", settings.prefix, None if bound else settings.ttl)
    with progress.phase("template"):
        result = ensure_template(
            info,
            settings.prefix,
            settings.schema,
            marker,
            root,
            lambda srv, db: _template_env(settings, srv, db, run_id),
        )
    progress.template_built = result.built
    roles = {names.serial: "serial", **dict.fromkeys(names.workers.values(), "worker")}
    with progress.phase("clones"):
        clone_databases(info, roles, result.name, marker)
    return RunState(
        run_id=run_id,
        prefix=settings.prefix,
        server=info,
        serial=names.serial,
        workers=names.workers,
        template=result.name,
        expires=marker.expires,
        redis=redis,
        pool=pool,
        timings=dict(progress.timings),
    )


def _template_env(settings: Settings, info: ServerInfo, database: str, run_id: str) -> Mapping[str, str]:
    target = Target(info.database_url(database), SERIAL_WORKER, run_id)
    return target_environment(target, settings.env, settings.async_driver)


def up(settings: Settings, workers: int, *, unique: bool, root: Path, progress: Progress) -> RunState:
    """Detached ``testdb up``: server, template, clones; a lease instead of a lock."""
    check_request(settings, workers, unique)
    run_id = new_run_id()
    with progress.phase("server"):
        info = acquire_server(settings, run_id, progress.notices)
    try:
        state = provision(
            settings,
            info,
            run_id,
            workers,
            unique=unique,
            bound=False,
            root=root,
            progress=progress,
        )
    except BaseException:
        release_server(info)
        raise
    if info.kind == "embedded":
        embedded.detach(info, None if info.extra.get("keep") else state.expires)
    return state


@contextlib.contextmanager
def bound_run(
    settings: Settings, workers: int, *, unique: bool, root: Path, progress: Progress
) -> Iterator[RunState]:
    """A run that lives exactly as long as this block; everything is dropped in ``finally``."""
    check_request(settings, workers, unique)
    run_id = new_run_id()
    with progress.phase("server"):
        info = acquire_server(settings, run_id, progress.notices)
    try:
        with RunLock(info, run_id):
            if settings.prune:
                with progress.phase("prune"):
                    reclaimed = prune_dead(info, prefix=settings.prefix).dropped
                if reclaimed:
                    progress.notices.append(f"reclaimed {len(reclaimed)} databases of dead runs")
            state = provision(
                settings,
                info,
                run_id,
                workers,
                unique=unique,
                bound=True,
                root=root,
                progress=progress,
            )
            try:
                yield state
            finally:
                with shielded(), progress.phase("teardown"):
                    drop_run_databases(state, progress)
    finally:
        with shielded(), progress.phase("teardown"):
            release_server(info)


def drop_run_databases(state: RunState, progress: Progress | None = None) -> list[str]:
    """Drop this run's databases (only those still marked as its own).

    A server of our own that is gone (stopped, killed) has nothing left to drop: not an
    error here, but noted in ``progress.server_lost`` so the caller can say so.
    """
    try:
        with admin_connection(state.server) as conn:
            # Also what replacement workers cloned for themselves under this run's id, and the
            # fresh-database pools' clones (a failed test's kept database has role "failed").
            rows = list_databases(conn)
            extra = [
                row.name
                for row in rows
                if row.marker is not None
                and row.marker.run_id == state.run_id
                and row.marker.role in ("serial", "worker", "fresh")
            ]
            names = list(dict.fromkeys([*state.databases, *extra]))
            dropped = drop_owned(conn, names, state.run_id, state.server.default_database)
            for name in unmarked_clones(rows, state.prefix, state.run_id):  # a crashed worker's
                drop_database(conn, name)
                dropped.append(name)
            return dropped
    except ServerError as exc:
        if state.server.owned:
            if progress is not None:
                progress.server_lost = exc.message
            return []
        raise
    except psycopg.OperationalError as exc:
        raise connection_error(state.server.admin_url, exc) from None


def down(state: RunState, *, stop_server: bool = False) -> list[str]:
    """Drop what ``up`` created and stop what it started."""
    try:
        return drop_run_databases(state)
    finally:
        release_server(state.server, force=stop_server)


def targets(state: RunState) -> tuple[Target, dict[str, Target]]:
    """The serial database and each worker's, as environment targets."""

    def target(worker: str, database: str) -> Target:
        redis = state.redis.get(worker)
        return Target(
            state.server.database_url(database),
            worker,
            state.run_id,
            redis,
            int(redis.rsplit("/", 1)[1]) if redis else None,
        )

    return target(SERIAL_WORKER, state.serial), {w: target(w, db) for w, db in state.workers.items()}


def environment(state: RunState, settings: Settings) -> dict[str, str]:
    """Every variable ``testdb up``/``env``/``run`` hands out for ``state``."""
    serial, workers = targets(state)
    env = run_environment(serial, workers, settings.env, settings.async_driver, state.pool)
    if state.template:
        unique = state.serial != state.prefix
        env.update(replacement_environment(state.server.admin_url, state.template, state.prefix, unique))
    return env


def renew_lease(state: RunState, ttl: float) -> RunState:
    """Push a detached run's lease ``ttl`` seconds into the future (``env``/``status``/``clean``)."""
    if state.expires is None:
        return state
    state.expires = time.time() + ttl
    with contextlib.suppress(ServerError, psycopg.Error), admin_connection(state.server) as conn:
        rows = {row.name: row.marker for row in list_databases(conn)}
        for name in state.databases:
            marker = rows.get(name)
            if marker is not None and marker.run_id == state.run_id:
                marker.expires = state.expires
                set_marker(conn, name, marker)
    if state.server.kind == "embedded" and not state.server.extra.get("keep"):
        embedded.detach(state.server, state.expires)
    return state


def database_status(state: RunState) -> list[tuple[str, str, bool, int]]:
    """(name, role, exists, connections) for each database of ``state``."""
    with admin_connection(state.server) as conn:
        rows = {row.name: row for row in list_databases(conn)}
    roles = {state.serial: "serial", **{db: w for w, db in state.workers.items()}}
    if state.template:
        roles[state.template] = "template"
    return [
        (name, role, name in rows, rows[name].connections if name in rows else 0)
        for name, role in roles.items()
    ]


def check_cleanable(
    info: ServerInfo,
    database: str,
    rows: Mapping[str, DatabaseRow],
    live: set[int],
    *,
    force: bool,
    run_id: str | None = None,
) -> None:
    """Refuse protected databases always; unless ``force``, refuse databases testdb did not
    create, another run's (when ``run_id`` names ours), and any live run's (``--url``)."""
    if is_protected(database, info.default_database):
        raise OwnershipError(
            f"refusing to empty protected database {database!r}",
            hint="postgres, template0, template1 and the server's default database are never emptied",
        )
    if database not in rows:
        raise ServerError(f"database {database!r} does not exist on {describe(info.admin_url)}")
    marker = rows[database].marker
    if force:
        return
    if marker is None:
        raise OwnershipError(
            f"database {database!r} was not created by testdb; refusing to empty it",
            hint="pass --force if you really want every row in it deleted",
        )
    others = marker.run_id != run_id if run_id is not None else is_alive(marker, live)
    if others:
        raise OwnershipError(
            f"database {database!r} belongs to {marker.owner}; refusing to empty it",
            hint="clean your own run's databases, or pass --force",
        )


def clean_databases(
    info: ServerInfo, databases: list[str], settings: Settings, *, force: bool, run_id: str | None = None
) -> list[CleanReport]:
    """Empty each database in FK-safe order (one round trip each); returns what was emptied."""
    from testdb.clean import clean_database

    with admin_connection(info) as conn:  # one catalog read checks every target
        rows = {row.name: row for row in list_databases(conn)}
        live = live_lock_keys(conn)
    for database in databases:
        check_cleanable(info, database, rows, live, force=force, run_id=run_id)
    return [clean_database(info.database_url(database), settings.clean) for database in databases]


def run_alive(state: RunState) -> bool:
    """True while a process-bound run still holds its liveness lock (or a lease is unexpired)."""
    marker = Marker.for_run(state.run_id, "serial", state.prefix, None)
    marker.expires = state.expires
    try:
        with admin_connection(state.server) as conn:
            return is_alive(marker, live_lock_keys(conn))
    except ServerError:
        return False


def require_server(state: RunState) -> None:
    """Raise StateError if the run's server no longer answers."""
    try:
        with admin_connection(state.server):
            return
    except ServerError as exc:
        raise StateError(
            f"the {state.server.kind} server of run {state.run_id} does not answer ({exc.message})",
            hint="'testdb down' removes what is left of it, 'testdb prune' what dead runs left",
        ) from None


def drop_templates(info: ServerInfo, prefix: str) -> list[str]:
    """Drop the cached schema templates of ``prefix`` that no one is cloning from."""
    with admin_connection(info) as conn:
        names = [
            row.name
            for row in list_databases(conn)
            if row.marker is not None
            and row.marker.role == "template"
            and row.marker.prefix == prefix
            and row.connections == 0
            and not is_protected(row.name, info.default_database)
        ]
        for name in names:
            drop_database(conn, name)
    return names


def bound_run_alive(state: RunState) -> bool:
    """A process-bound run is alive while its process lives (same host) or its lock is held.

    A server that does not answer proves nothing: it may be busy or out of connections.
    """
    host = state.owner.rsplit("@", 1)[-1]
    if host == socket.gethostname() and pid_alive(state.owner_pid) and state.owner_pid != os.getpid():
        return True
    return run_alive(state)
