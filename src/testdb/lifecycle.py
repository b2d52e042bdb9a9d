"""The main job as plain functions: bring a run up, describe it, tear it down.

``cli.py`` and the pytest plugin are thin layers over these. A *detached* run
(``testdb up``) records a lease and a state file (:func:`start_detached`); a *bound* run
(``testdb run``, pytest self-provisioning) holds its liveness lock for as long as the
:func:`bound_run` block lasts and always tears down in ``finally``; :func:`recorded` keeps
its state file for exactly that long, so a SIGKILLed run stays visible to ``status`` and
``down``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from testdb.envvars import Target, replacement_environment, run_environment, target_environment
from testdb.errors import OwnershipError, ServerError, StateError, TestdbError
from testdb.fresh.names import unmarked_fresh_clones
from testdb.naming import SERIAL_WORKER, database_names, is_protected, new_run_id, validate_prefix, worker_ids
from testdb.ownership import DatabaseRow, Liveness, Marker, RunLock, list_databases, set_marker
from testdb.provision import check_names_free, clone_databases, connection_budget, drop_databases, owned_names
from testdb.servers import acquire_server, backend, release_server
from testdb.servers.base import ServerInfo, admin_connection, describe
from testdb.signals import shielded
from testdb.state import RunState, load_state, remove_state, require_state, save_state

if TYPE_CHECKING:
    from testdb.clean import CleanReport
    from testdb.config import Settings
    from testdb.fresh.kept import KeptDatabase
    from testdb.prune import PruneReport
    from testdb.template import TemplateHold


@dataclass
class Progress:
    """What a run reports as it goes: notices (printed once) and phase timings."""

    notices: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    template_built: bool | None = None
    template_notice: str | None = None  # "built", "reused", "extended from … (+N revisions)"
    server_lost: str | None = None  # set when our own server died during the run
    notify: Callable[[str], None] | None = None  # says a notice now (admission waits)

    def say(self, message: str) -> None:
        """A notice that cannot wait until provisioning is over (e.g. waiting for connections)."""
        if self.notify is not None:
            self.notify(message)
        else:
            self.notices.append(message)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class Request:
    """What a run was asked for: how many workers, and whether a serial database is needed."""

    workers: int
    unique: bool = False
    serial: bool = True  # False when the child is `pytest -n N`: its controller runs no test
    root: Path = field(default_factory=Path.cwd)  # where schema sources are found


def check_request(settings: Settings, request: Request) -> None:
    """Everything that can be refused before a server is touched."""
    if request.workers < 1:
        raise TestdbError(
            f"-n must be at least 1, got {request.workers}", hint="use -n N with N >= 1 workers"
        )
    validate_prefix(settings.prefix, request.workers, request.unique)


def provision(
    settings: Settings,
    info: ServerInfo,
    run_id: str,
    request: Request,
    *,
    bound: bool,
    progress: Progress,
    pool: tuple[int, int] | None = None,
) -> RunState:
    """Template and clones for one run on ``info``; all or nothing.

    ``pool`` is the per-worker budget admission reserved; without it, one is computed.
    """
    names = database_names(settings.prefix, request.workers, run_id if request.unique else None)
    with admin_connection(info) as conn:
        pool = pool or connection_budget(conn, request.workers, settings.max_connections_headroom)
        wanted = names.all() if request.serial else list(names.workers.values())
        reclaim = check_names_free(conn, wanted, run_id, info.default_database)
    drop_databases(info, reclaim)  # left by dead runs: theirs to lose
    marker = Marker.for_run(run_id, "worker", settings.prefix, None if bound else settings.ttl)
    roles = {name: "worker" for name in names.workers.values()}
    if request.serial:
        roles = {names.serial: "serial", **roles}
    from testdb.template import TemplateHold

    with TemplateHold(info) as hold:  # nobody drops the template until our clones' markers name it
        template = _template(settings, info, run_id, marker, request.root, progress, hold)
        with progress.phase("clones"):
            clone_databases(info, roles, template, marker)  # type: ignore[arg-type]
    return RunState(
        run_id=run_id,
        prefix=settings.prefix,
        server=info,
        serial=names.serial,
        serial_created=request.serial,
        workers=names.workers,
        template=template,
        expires=marker.expires,
        redis=_redis(settings, request.workers),
        pool=pool,
        timings=dict(progress.timings),
    )


def _template(
    settings: Settings,
    info: ServerInfo,
    run_id: str,
    marker: Marker,
    root: Path,
    progress: Progress,
    hold: TemplateHold,
) -> str:
    from testdb.template import ensure_template

    with progress.phase("template"):
        result = ensure_template(
            info,
            settings.prefix,
            settings.schema,
            marker,
            root,
            lambda srv, db: _template_env(settings, srv, db, run_id),
            hold,
        )
    progress.template_built = result.built
    progress.template_notice = result.notice
    return result.name


def _redis(settings: Settings, workers: int) -> dict[str, str]:
    redis = settings.redis
    if not redis.url:
        return {}
    from testdb.redisdb import redis_urls

    return redis_urls(redis.url, worker_ids(workers), redis.serial_db, first_db=redis.first_db)


def _template_env(settings: Settings, info: ServerInfo, database: str, run_id: str) -> Mapping[str, str]:
    target = Target(info.database_url(database), SERIAL_WORKER, run_id)
    return target_environment(target, settings.env, settings.async_driver)


def up(settings: Settings, request: Request, *, progress: Progress) -> RunState:
    """Detached ``testdb up``: server, template, clones; a lease instead of a lock."""
    check_request(settings, request)
    run_id = new_run_id()
    with progress.phase("server"):
        info = acquire_server(settings, run_id, progress.notices)
    try:
        from testdb.admission import reserve

        # A detached run's reservation lasts while it provisions; its tests' connections
        # are then counted like anyone else's by the runs that come after it.
        with reserve(info, request.workers, settings, progress.say, run_id=run_id) as reservation:
            state = provision(
                settings, info, run_id, request, bound=False, progress=progress, pool=reservation.pool
            )
    except BaseException:
        release_server(info)
        raise
    backend(info.kind).detach(info, state.expires)
    return state


def start_detached(settings: Settings, request: Request, *, progress: Progress) -> RunState:
    """``up`` and its state file, or nothing at all (refused if a run is already up here)."""
    refuse_if_up(settings)
    state = up(settings, request, progress=progress)
    try:
        save_state(state, settings.state_dir)
    except BaseException:
        with shielded():
            teardown(state)
        raise
    return state


def refuse_if_up(settings: Settings) -> None:
    existing = load_state(settings.state_dir)
    if existing is not None:
        raise TestdbError(
            f"run {existing.run_id} is already up here ({len(existing.databases)} databases)",
            hint="use 'testdb env' to print it, or 'testdb down' first",
        )


@contextlib.contextmanager
def bound_run(settings: Settings, request: Request, *, progress: Progress) -> Iterator[RunState]:
    """A run that lives exactly as long as this block; everything is dropped in ``finally``."""
    from testdb.sharing import redis_claim

    check_request(settings, request)
    # Two runs on one machine must not flush each other's Redis databases.
    with redis_claim(settings, request.workers, request.serial):
        yield from _bound(settings, request, progress)


def _bound(settings: Settings, request: Request, progress: Progress) -> Iterator[RunState]:
    """bound_run's body: server, liveness lock, admission, provision; teardown in ``finally``."""
    run_id = new_run_id()
    with progress.phase("server"):
        info = acquire_server(settings, run_id, progress.notices)
    try:
        from testdb.admission import connect_waiting, reserve

        with (
            RunLock(lambda: connect_waiting(info, settings, progress.say), run_id) as lock,
            reserve(
                info, request.workers, settings, progress.say, conn=lock.conn, run_id=run_id
            ) as reservation,
        ):
            _prune_dead(settings, info, progress)
            state = provision(
                settings, info, run_id, request, bound=True, progress=progress, pool=reservation.pool
            )
            try:
                yield state
            finally:
                with shielded(), progress.phase("teardown"):
                    drop_run_databases(state, progress)
    finally:
        with shielded(), progress.phase("teardown"):
            release_server(info)


def _prune_dead(settings: Settings, info: ServerInfo, progress: Progress) -> None:
    if not settings.prune:
        return
    from testdb.prune import prune_databases

    with progress.phase("prune"):
        reclaimed = prune_databases(info, prefix=settings.prefix).dropped
    if reclaimed:
        progress.notices.append(f"reclaimed {len(reclaimed)} databases of dead runs")


@contextlib.contextmanager
def recorded(state: RunState, settings: Settings) -> Iterator[None]:
    """Keep ``state`` in the state file while the block runs, unless another run is recorded.

    A run killed with SIGKILL cannot tear down: its state file lets ``testdb status`` show
    what it left and ``testdb down`` remove it (``testdb prune`` works without it).
    """
    if load_state(settings.state_dir) is not None:
        yield
        return
    save_state(state, settings.state_dir)
    try:
        yield
    finally:
        remove_state(settings.state_dir)


def drop_run_databases(state: RunState, progress: Progress | None = None) -> list[str]:
    """Drop this run's databases (only those still marked as its own), in parallel.

    A server of our own that is gone (stopped, killed) has nothing left to drop: not an
    error here, but noted in ``progress.server_lost`` so the caller can say so.
    """
    import psycopg

    try:
        with admin_connection(state.server) as conn:
            rows = list_databases(conn)  # one catalog read decides everything below
        names = owned_names(rows, _run_databases(rows, state), state.run_id, state.server.default_database)
        names += unmarked_fresh_clones(rows, state.prefix, state.run_id)
        drop_databases(state.server, names)
        return names
    except ServerError as exc:
        if state.server.owned:
            if progress is not None:
                progress.server_lost = exc.message
            return []
        raise
    except psycopg.OperationalError as exc:
        from testdb.servers.base import connection_error

        raise connection_error(state.server.admin_url, exc) from None


def _run_databases(rows: list[DatabaseRow], state: RunState) -> list[str]:
    """The state's databases and what replacement workers and lazy serials cloned under its id."""
    extra = [
        row.name
        for row in rows
        if row.marker is not None and row.marker.run_id == state.run_id and row.marker.role in RUN_ROLES
    ]
    return list(dict.fromkeys([*state.databases, *extra]))


RUN_ROLES = frozenset({"serial", "worker", "fresh"})  # "failed" outlives its run on purpose


@dataclass(frozen=True)
class DownReport:
    dropped: list[str]
    templates: list[str]
    server_stopped: bool


def down(settings: Settings, *, stop_server: bool = False, templates: bool = False) -> DownReport | None:
    """Drop what ``up`` created and stop what it started; None if nothing is up here."""
    state = load_state(settings.state_dir)
    if state is None:
        return None
    if state.expires is None and bound_run_alive(state):
        raise TestdbError(
            f"run {state.run_id} is still running (pid {state.owner_pid}); it tears down when it ends",
            hint="stop that 'testdb run' (Ctrl-C) instead; 'testdb down' is for detached runs and dead ones",
        )
    stops = state.server.owned and (stop_server or not state.server.keep)
    with shielded():
        try:
            dropped = drop_run_databases(state)  # first: its markers hold the template in use
            # Templates of a server that is about to be stopped go with it.
            dropped_templates = drop_templates(state.server, state.prefix) if templates and not stops else []
        finally:
            release_server(state.server, force=stop_server)
        remove_state(settings.state_dir)
    return DownReport(dropped, dropped_templates, stops)


def teardown(state: RunState, *, stop_server: bool = False) -> list[str]:
    """Drop a run's databases and stop what it started (kept servers unless ``stop_server``)."""
    try:
        return drop_run_databases(state)
    finally:
        release_server(state.server, force=stop_server)


def targets(state: RunState) -> tuple[Target, dict[str, Target]]:
    """The serial database and each worker's, as environment targets."""

    def target(worker: str, database: str) -> Target:
        redis = state.redis.get(worker)
        redis_db = int(redis.rsplit("/", 1)[1]) if redis else None
        return Target(state.server.database_url(database), worker, state.run_id, redis, redis_db)

    return target(SERIAL_WORKER, state.serial), {w: target(w, db) for w, db in state.workers.items()}


def environment(state: RunState, settings: Settings) -> dict[str, str]:
    """Every variable ``testdb up``/``env``/``run`` hands out for ``state``."""
    serial, workers = targets(state)
    env = run_environment(serial, workers, settings.env, settings.async_driver, state.pool)
    if state.template:
        unique = state.serial != state.prefix
        env.update(replacement_environment(state.server.admin_url, state.template, state.prefix, unique))
    if not state.serial_created:
        env["TESTDB_SERIAL_LAZY"] = "1"  # a process that runs tests in the controller clones it
    return env


def current_environment(settings: Settings) -> dict[str, str]:
    """``testdb env``: the recorded run's environment, its lease renewed."""
    state = require_state(settings.state_dir)
    require_server(state)
    save_state(renew_lease(state, settings.ttl), settings.state_dir)
    return environment(state, settings)


def renew_lease(state: RunState, ttl: float) -> RunState:
    """Push a detached run's lease ``ttl`` seconds into the future (``env``/``status``/``clean``)."""
    import psycopg

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
    backend(state.server.kind).detach(state.server, state.expires)
    return state


@dataclass(frozen=True)
class DatabaseStatus:
    name: str
    role: str
    exists: bool
    connections: int


@dataclass(frozen=True)
class StatusReport:
    state: RunState
    databases: list[DatabaseStatus]
    alive: bool
    server_line: str | None  # the backend's word on its process (container, cluster)


def status(settings: Settings) -> StatusReport | None:
    """What is up here (None if nothing), its lease renewed."""
    state = load_state(settings.state_dir)
    if state is None:
        return None
    renew_lease(state, settings.ttl)
    save_state(state, settings.state_dir)
    with admin_connection(state.server) as conn:
        rows = {row.name: row for row in list_databases(conn)}
        alive = _alive(state, Liveness.read(conn))
    roles = {db: w for w, db in state.workers.items()}
    if state.serial_created or state.serial in rows:
        roles = {state.serial: "serial", **roles}
    if state.template:
        roles[state.template] = "template"
    found = [
        DatabaseStatus(n, r, n in rows, rows[n].connections if n in rows else 0) for n, r in roles.items()
    ]
    return StatusReport(state, found, alive, backend(state.server.kind).describe(state.server))


def _alive(state: RunState, liveness: Liveness) -> bool:
    return liveness.run_alive(state.run_id, state.expires)


def check_cleanable(
    info: ServerInfo,
    database: str,
    rows: Mapping[str, DatabaseRow],
    liveness: Liveness,
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
    others = marker.run_id != run_id if run_id is not None else liveness.alive(marker)
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
        liveness = Liveness.read(conn)
    for database in databases:
        check_cleanable(info, database, rows, liveness, force=force, run_id=run_id)
    return [clean_database(info.database_url(database), settings.clean) for database in databases]


def clean(
    settings: Settings, *, url: str | None, worker: str | None, database: str | None, force: bool
) -> list[tuple[str, CleanReport]]:
    """``testdb clean``: the recorded run's databases (or one), or the database a URL names."""
    if url is not None:
        from testdb.servers.url import acquire_url

        given = acquire_url(url, "--url")
        targets = [database or given.default_database]
        # The URL names the database to empty; manage it from the maintenance database.
        info = ServerInfo(kind=given.kind, url=given.database_url("postgres").render_as_string(False))
        run_id: str | None = None
    else:
        state = require_state(settings.state_dir)
        save_state(renew_lease(state, settings.ttl), settings.state_dir)
        info, targets, run_id = state.server, pick_databases(state, worker, database), state.run_id
    reports = clean_databases(info, targets, settings, force=force, run_id=run_id)
    return list(zip(targets, reports, strict=True))


def pick_databases(state: RunState, worker: str | None, database: str | None) -> list[str]:
    from testdb.errors import ConfigError

    if worker is not None:
        if worker == SERIAL_WORKER:
            return [state.serial]
        if worker not in state.workers:
            raise ConfigError(
                f"no worker {worker!r} in this run", hint="workers: " + ", ".join(["master", *state.workers])
            )
        return [state.workers[worker]]
    if database is not None:
        return [database]
    return state.databases


def prune(
    settings: Settings,
    *,
    dry_run: bool,
    force: bool,
    templates: bool,
    prefix: str | None,
    explicit_server: bool,
) -> PruneReport:
    """``testdb prune``: dead runs' servers on this machine, then their databases on the server.

    The server is the recorded run's, unless one was named (``--server``/``--url``).
    """
    from testdb.prune import prune_everything

    state = None if explicit_server else load_state(settings.state_dir)
    return prune_everything(settings, state.server if state else None, prefix, dry_run, force, templates)


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
    """Drop the cached schema templates of ``prefix`` that no live run holds or clones from."""
    from testdb.template import drop_stale

    with admin_connection(info) as conn:
        return drop_stale(conn, prefix, "", keep=0)


def bound_run_alive(state: RunState) -> bool:
    """A process-bound run is alive while its process lives (same host) or its lock is held.

    A server that does not answer proves nothing: it may be busy or out of connections.
    """
    from testdb.ownership import owner_alive

    host = state.owner.rsplit("@", 1)[-1]
    if owner_alive(host, state.owner_pid) and state.owner_pid != os.getpid():
        return True
    try:
        with admin_connection(state.server) as conn:
            return _alive(state, Liveness.read(conn))
    except ServerError:
        return False


def run_request(settings: Settings, command: list[str], workers: int | None, unique: bool) -> Request:
    """What ``testdb run -- COMMAND`` needs: workers from ``-n`` or the command's own ``-n``.

    The serial database is skipped when the command is ``pytest -n N`` (N >= 1): xdist's
    controller runs no test; a process that does clones it on first use.
    """
    from testdb.runner import numprocesses_from, resolve_workers

    asked = numprocesses_from(command)
    count = workers if workers is not None else resolve_workers(asked, settings.workers)
    serial = asked is None or asked == 0
    return Request(count, unique, serial)


@dataclass(frozen=True)
class RunOutcome:
    state: RunState
    returncode: int


def run(
    settings: Settings,
    request: Request,
    command: list[str],
    *,
    keep: bool,
    progress: Progress,
    announce: Callable[[RunState], None],
) -> RunOutcome:
    """``testdb run``: provision, run ``command`` with the run's environment, tear down.

    ``keep`` makes it a detached run that outlives the command (``testdb down`` removes it).
    ``announce`` is called once the databases exist, before the command starts.
    """
    from testdb.runner import check_command
    from testdb.sharing import redis_claim
    from testdb.signals import interrupts_raise

    check_command(command)
    with interrupts_raise():
        if keep:  # the Redis numbers are claimed while the command runs, not after it
            with redis_claim(settings, request.workers, request.serial):
                state = start_detached(settings, request, progress=progress)
                return RunOutcome(state, _run_child(command, state, settings, progress, announce))
        with bound_run(settings, request, progress=progress) as state, recorded(state, settings):
            code = _run_child(command, state, settings, progress, announce)
    return RunOutcome(state, code)


def _run_child(
    command: list[str],
    state: RunState,
    settings: Settings,
    progress: Progress,
    announce: Callable[[RunState], None],
) -> int:
    from testdb.runner import run_child

    announce(state)
    with progress.phase("command"):
        return run_child(command, environment(state, settings), settings.grace).returncode


def kept_databases(settings: Settings, info: ServerInfo | None) -> list[KeptDatabase]:
    """Failed tests' databases kept for inspection on the run's server (or the server the
    settings name, when nothing is up); none when no server answers."""
    from testdb.fresh.kept import kept_databases as on_server
    from testdb.servers import find_server

    with contextlib.suppress(TestdbError):  # status still reports the run when this fails
        info = info or find_server(settings)
        return on_server(info, settings.prefix) if info is not None else []
    return []
