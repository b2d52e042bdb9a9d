"""A pool of fresh databases for one test process, cloned ahead and recycled in the background.

Why in-process (one pool per xdist worker) rather than a server the workers ask over a
socket, as IntegreSQL does: a worker runs one test at a time, so its own queue is all the
coordination a hand-out needs; the hand-out is a deque pop under a lock (microseconds), with
no SQL and no round trip; and there is no extra process to keep alive, find, or lose. Each
database belongs to exactly one process (its name carries the worker id, its marker the
worker's pid), so no two tests can ever be handed the same one.

States, as in IntegreSQL: *ready* (cloned, waiting), *leased* (handed to a running test),
*dirty* (used, waiting to be dropped). The recycler threads (``parallel`` of them, each
with its own admin connection) keep ``target`` databases ready, clone before they drop
(drops wait until the pool is full, or until it holds ``room`` databases: at most 8 x
``max_size``, and half the server's free disk shared by the workers when the server runs
on this machine), and grow the target by one, up to ``max_size``, whenever a test had to
wait. A ready database holds no connection, so the
connection budget bounds the recycler's ``parallel`` connections, not the pool's size;
free disk bounds the size.

Every database is marked (role ``fresh``, the run's id, this process's pid), so the run's
teardown and ``testdb prune`` (after SIGKILL) drop them, and a replacement worker drops
those of a crashed worker of its run (a pid that is gone on this host) when it starts.
A failed test's database is renamed ``<prefix>_failed_<id>`` and re-marked with role
``failed`` and a lease of ``keep_failed`` seconds, after which ``prune`` drops it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from testdb.envvars import mask_url
from testdb.errors import NamingError, ServerError, StateError, TestdbError
from testdb.fresh.names import (
    FAILED_INFIX,
    FAILED_ROLE,
    FRESH_ROLE,
    fresh_prefix,
    spare_prefix,
    unmarked_fresh_clones,
    worker_of,
)
from testdb.fresh.stats import PoolStats
from testdb.naming import MAX_IDENTIFIER_BYTES
from testdb.ownership import DatabaseRow, Marker, list_databases, pid_alive, set_marker
from testdb.provision import clone_strategy, drop_database, terminate_sessions
from testdb.servers.base import ServerInfo, admin_connection
from testdb.urls import PgUrl

DISK_SHARE = 0.5  # the run's pools together use at most this share of the server's free disk
ROOM_FACTOR = 8  # databases a pool may hold (ready + used, not dropped yet), per max_size
RETRY_S = (0.05, 0.25, 1.0, 3.0)  # backoff for a clone or rename that meets a busy database
WAIT_POLL_S = 0.5


@dataclass(frozen=True)
class PoolSpec:
    """Where a pool clones from and how big it may grow."""

    admin_url: str
    template: str
    prefix: str
    run_id: str
    worker_id: str
    size: int = 4
    max_size: int = 16
    parallel: int = 2
    keep_failed: float = 24 * 3600
    timeout: float = 60.0
    workers: int = 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], worker_id: str, **sizes: Any) -> PoolSpec:
        """The run's template and admin URL, as ``testdb run``/``up``/``--testdb`` hand them out."""
        admin, template = environ.get("TESTDB_ADMIN_URL"), environ.get("TESTDB_TEMPLATE")
        run_id = environ.get("TESTDB_RUN_ID")
        if not admin or not template or not run_id:
            raise StateError(
                "no schema template in this environment to clone fresh databases from",
                hint="run the tests under 'testdb run -- pytest ...' or with 'pytest --testdb'",
            )
        workers = int(environ.get("TESTDB_WORKERS") or 1)
        prefix = environ.get("TESTDB_PREFIX", "test")
        return cls(admin, template, prefix, run_id, worker_id, workers=max(workers, 1), **sizes)


@dataclass
class Lease:
    """A database handed to one test; ``keep_as`` is set when the test failed."""

    name: str
    url: PgUrl
    keep_as: str | None = None


class FreshPool:
    """Ready databases for this process's tests; see the module docstring."""

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        self.info = ServerInfo(kind="url", url=spec.admin_url)
        self.stats = PoolStats()
        # Only an xdist controller clones spares; a serial run never looks for them.
        self._spares_left = bool(os.environ.get("PYTEST_XDIST_WORKER"))
        self.max_size = max(spec.size, spec.max_size)
        self.room = ROOM_FACTOR * self.max_size  # ready + used-not-dropped-yet databases at most
        self._cond = threading.Condition()
        self._ready: collections.deque[str] = collections.deque()
        self._dirty: collections.deque[str] = collections.deque()
        self._leased: set[str] = set()
        self._cloning = 0
        self._existing = 0
        self._target = spec.size
        self._closing = False
        self._error: BaseException | None = None
        self._numbers = itertools.count()
        self._threads: list[threading.Thread] = []
        self._marker = Marker.for_run(spec.run_id, FRESH_ROLE, spec.prefix, None)
        self._marker.template = spec.template  # the template is never dropped under its clones
        self._strategy: sql.Composable = sql.SQL("")

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FreshPool:
        """Reclaim a crashed worker's databases, size the pool, start the recycler."""
        self.fresh_name(10**6)  # a name too long for PostgreSQL fails here, not mid-run
        with admin_connection(self.info) as conn:
            rows = list_databases(conn)
            self._reclaim_dead(conn, rows)
            self._marker.expires = _run_lease(rows, self.spec.run_id)
            self._strategy = clone_strategy(conn)
            self.room = min(self.room, self._disk_cap(conn))
            self.max_size = min(self.max_size, self.room)
            self._target = min(self.spec.size, self.max_size)
            self._claim_first(conn)
        for index in range(self.spec.parallel):
            thread = threading.Thread(target=self._recycle, name=f"testdb-fresh-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _claim_first(self, conn: psycopg.Connection[Any]) -> None:
        """Ready before the first test: claim up to ``target`` of the controller's spares now."""
        while len(self._ready) < self._target:
            name = self.fresh_name(next(self._numbers))
            if not self._claim_spare(conn, name):
                return
            set_marker(conn, name, self._marker)
            self._ready.append(name)
            self._existing += 1
            self.stats.claimed += 1
        self.stats.high_water = self._existing

    def close(self, timeout: float = 120.0) -> None:
        """Drop every database this pool still has (leased ones too: their tests are over)."""
        with self._cond:
            self._closing = True
            self._dirty.extend(self._leased)
            self._leased.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def expect(self, tests: int) -> None:
        """Clone ahead for about ``tests`` hand-outs (within ``max_size``)."""
        with self._cond:
            self._target = max(self._target, min(tests, self.max_size))
            self._cond.notify_all()

    # ------------------------------------------------------------ hand-out

    def acquire(self) -> Lease:
        """A ready database: a deque pop, or a wait for the recycler when the pool ran dry."""
        started = time.perf_counter()
        with self._cond:
            warm = bool(self._ready)
            if not warm:
                self.stats.waits += 1
                self._target = min(self._target + 1, self.max_size)  # demand outran the pool
                self._cond.notify_all()
                self._wait_for_ready()
            name = self._ready.popleft()
            self._leased.add(name)
            self.stats.handouts += 1
            self._cond.notify()  # a slot to refill
        elapsed = (time.perf_counter() - started) * 1000
        self.stats.handout_ms.append(elapsed)
        if warm:
            self.stats.warm_ms.append(elapsed)
        return Lease(name, self.info.database_url(name))

    def _wait_for_ready(self) -> None:
        deadline = time.monotonic() + self.spec.timeout
        while not self._ready:
            if self._error is not None and not any(t.is_alive() for t in self._threads):
                raise ServerError(
                    f"the fresh database pool stopped: {self._error}",
                    hint="the server may be down or out of connections or disk",
                ) from None
            if time.monotonic() > deadline:
                raise ServerError(
                    f"no fresh database became ready within {self.spec.timeout:.0f}s",
                    hint="the server is overloaded; lower -n or raise fresh.timeout",
                )
            self._cond.wait(WAIT_POLL_S)

    def release(self, lease: Lease) -> None:
        """Give a used database back: dropped in the background, or kept if its test failed."""
        if lease.keep_as is not None:
            self._keep(lease, lease.keep_as)
            return
        with self._cond:
            self._leased.discard(lease.name)
            self._dirty.append(lease.name)
            self._cond.notify()

    # ------------------------------------------------------------ names

    def fresh_name(self, number: int) -> str:
        """``<prefix>_f<run6>_<worker>_<n>``: six hex digits of the run id keep it in 63 bytes."""
        spec = self.spec
        name = f"{fresh_prefix(spec.prefix, spec.run_id)}{spec.worker_id}_{number:x}"
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            raise NamingError(
                f"fresh database name {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes",
                hint="shorten the prefix",
            )
        return name

    def kept_name(self) -> str:
        """The name a failed test's database is renamed to."""
        return f"{self.spec.prefix}{FAILED_INFIX}{secrets.token_hex(4)}"

    # ------------------------------------------------------------ recycler

    def _recycle(self) -> None:
        """One recycler thread: clone while the pool is short, drop used databases otherwise."""
        try:
            with admin_connection(self.info) as conn:
                while (job := self._next_job()) is not None:
                    clone, name = job
                    if clone:
                        self._clone(conn, name)
                    else:
                        drop_database(conn, name)
                        with self._cond:
                            self._existing -= 1
        except BaseException as exc:  # reported to the next test that waits (and the summary)
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _next_job(self) -> tuple[bool, str] | None:
        """(True, name) to clone, (False, name) to drop, None to stop."""
        with self._cond:
            while True:
                if self._closing:
                    queue = self._ready or self._dirty
                    return (False, queue.popleft()) if queue else None
                short = len(self._ready) + self._cloning < self._target
                if short and self._existing - len(self._leased) < self.room:
                    # Clone first: drops wait until the pool is full or it holds ``room``
                    # databases, so a test waits on a clone at most, never on a drop (a DROP
                    # DATABASE on a durable server waits for a checkpoint: up to seconds).
                    self._cloning += 1
                    self._existing += 1
                    self.stats.high_water = max(self.stats.high_water, self._existing)
                    return True, self.fresh_name(next(self._numbers))
                if self._dirty:
                    return False, self._dirty.popleft()
                self._cond.wait()

    def _clone(self, conn: psycopg.Connection[Any], name: str) -> None:
        """Make ``name`` ready: claim a spare the controller cloned ahead, else clone one."""
        started = time.perf_counter()
        try:
            claimed = self._claim_spare(conn, name)
            if not claimed:
                clone_database(conn, name, self.spec.template, self._strategy)
            set_marker(conn, name, self._marker)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                drop_database(conn, name)
            with self._cond:
                self._cloning -= 1
                self._existing -= 1
            raise
        with self._cond:
            self._cloning -= 1
            self._ready.append(name)
            if claimed:
                self.stats.claimed += 1
            else:
                self.stats.recycle_ms.append((time.perf_counter() - started) * 1000)
            self._cond.notify_all()

    def _claim_spare(self, conn: psycopg.Connection[Any], name: str) -> bool:
        """Rename one of the run's spares to ``name``; False when none is left."""
        if not self._spares_left:
            return False  # a serial run: no xdist controller clones spares for it
        pattern = _like_escape(spare_prefix(self.spec.prefix, self.spec.run_id)) + "%"
        spares = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY random() LIMIT 4", (pattern,)
        ).fetchall()
        for (spare,) in spares:
            try:
                conn.execute(_rename(spare, name))
                return True
            except (psycopg.errors.InvalidCatalogName, psycopg.errors.ObjectInUse):
                continue  # another worker claimed it first
        return False

    # ------------------------------------------------------------ kept databases

    def _keep(self, lease: Lease, new_name: str) -> None:
        """Rename a failed test's database and give it a lease of its own."""
        marker = self._marker.with_role(FAILED_ROLE)
        marker.expires, marker.template = time.time() + self.spec.keep_failed, None
        rename = _rename(lease.name, new_name)
        with admin_connection(self.info) as conn:

            def attempt() -> None:
                terminate_sessions(conn, lease.name)  # the test is over; its connections may linger
                conn.execute(rename)

            _retry_busy(attempt)
            set_marker(conn, new_name, marker)
        with self._cond:
            self._leased.discard(lease.name)
            self._existing -= 1
        self.stats.kept.append(mask_url(self.info.database_url(new_name)))

    # ------------------------------------------------------------ start-up checks

    def _reclaim_dead(self, conn: psycopg.Connection[Any], rows: Sequence[DatabaseRow]) -> None:
        """Drop this run's fresh databases whose process is gone (a crashed worker's)."""
        host = socket.gethostname()
        dead = [
            row
            for row in rows
            if row.marker is not None
            and row.marker.role == FRESH_ROLE
            and row.marker.run_id == self.spec.run_id
            and row.marker.host == host
            and row.marker.pid != os.getpid()
            and _process_gone(row.marker.pid)
        ]
        start = fresh_prefix(self.spec.prefix, self.spec.run_id)
        dead_workers = {worker_of(row.name, start) for row in dead}
        names = [row.name for row in dead]
        names += unmarked_fresh_clones(rows, self.spec.prefix, self.spec.run_id, dead_workers)
        for name in names:
            drop_database(conn, name)
        self.stats.reclaimed += len(names)

    def _disk_cap(self, conn: psycopg.Connection[Any]) -> int:
        """Most databases this pool may hold ready, from the server's free disk when it is ours to see."""
        try:  # superusers and pg_read_all_settings only
            row = conn.execute(
                "SELECT pg_database_size(%s), current_setting('data_directory')", (self.spec.template,)
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return self.room
        if row is None or not os.path.isdir(row[1]):
            return self.room  # a server on another machine: its disk is not measurable from here
        share = shutil.disk_usage(row[1]).free * DISK_SHARE / self.spec.workers
        cap = int(share // max(int(row[0]), 1))
        if cap < 2:
            raise ServerError(
                f"not enough free disk on the server for 2 fresh databases per worker ({row[1]})",
                hint="free disk space on the server, or use fewer workers",
            )
        return cap


def _rename(name: str, new_name: str) -> sql.Composed:
    return sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def clone_database(conn: psycopg.Connection[Any], name: str, template: str, strategy: sql.Composable) -> None:
    """CREATE DATABASE name TEMPLATE template (retried while the template is briefly in use)."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
        sql.Identifier(name), sql.Identifier(template), strategy
    )
    _retry_busy(lambda: conn.execute(statement))


class Prefill:
    """Spares the xdist controller clones while its workers start, sized from the last run's demand.

    A worker's recycler claims a spare by renaming it (a few ms) instead of cloning (a hundred
    or so), so the pools are warm from the first test. Spares are marked like the pools' own
    databases (role ``fresh``, the run's id); those no worker claimed are dropped at the end.
    """

    def __init__(self, spec: PoolSpec, count: int, parallel: int) -> None:
        self.spec, self.count, self.parallel = spec, count, parallel
        self.info = ServerInfo(kind="url", url=spec.admin_url)
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Prefill:
        marker = Marker.for_run(self.spec.run_id, FRESH_ROLE, self.spec.prefix, None)
        marker.template = self.spec.template
        with admin_connection(self.info) as conn:
            marker.expires = _run_lease(list_databases(conn), self.spec.run_id)
            strategy = clone_strategy(conn)
        for index in range(self.parallel):
            thread = threading.Thread(
                target=self._work, args=(marker, strategy), name=f"testdb-prefill-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _work(self, marker: Marker, strategy: sql.Composable) -> None:
        prefix = spare_prefix(self.spec.prefix, self.spec.run_id)
        # A spare is an optimisation: a failure here leaves the workers to clone their own.
        with contextlib.suppress(psycopg.Error, TestdbError), admin_connection(self.info) as conn:
            while not self._stop.is_set() and (number := next(self._numbers)) < self.count:
                name = f"{prefix}{number:x}"
                clone_database(conn, name, self.spec.template, strategy)
                with contextlib.suppress(psycopg.errors.InvalidCatalogName):  # a worker claimed it already
                    set_marker(conn, name, marker)

    def close(self) -> list[str]:
        """Stop cloning; drop the spares no worker claimed."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        start = spare_prefix(self.spec.prefix, self.spec.run_id)
        with admin_connection(self.info) as conn:
            left = [
                row.name
                for row in list_databases(conn)
                if row.name.startswith(start)
                and (
                    row.marker is None
                    or (row.marker.run_id == self.spec.run_id and row.marker.role == FRESH_ROLE)
                )
            ]
            for name in left:
                drop_database(conn, name)
        return left


def _process_gone(pid: int) -> bool:
    """No such process on this host, or only its zombie (a crashed worker its parent has not
    reaped yet: xdist's controller may still hold it)."""
    if not pid_alive(pid):
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux): trust pid_alive
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _run_lease(rows: Sequence[DatabaseRow], run_id: str) -> float | None:
    """A detached run's lease, as its other databases carry it (None for a process-bound run)."""
    for row in rows:
        if row.marker is not None and row.marker.run_id == run_id and row.marker.role in ("serial", "worker"):
            return row.marker.expires
    return None


def _retry_busy(action: Callable[[], object]) -> None:
    """Run ``action``, retrying while a database is briefly in use (a closing session), with backoff."""
    for delay in (*RETRY_S, None):
        try:
            action()
            return
        except psycopg.errors.ObjectInUse:
            if delay is None:
                raise
            time.sleep(delay)
