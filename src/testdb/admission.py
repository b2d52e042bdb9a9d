"""Connection admission: a run reserves the connections it will use before it provisions.

Many runners share one server (a CI matrix, a team). Each would otherwise open its admin
connections and hand pools to its tests until the server answers "too many clients".
Instead a run asks, through the server itself (no coordinator process, no table: a
``LOGIN CREATEDB`` role cannot create one in ``postgres`` on PostgreSQL 15+), for

    own (its lock connection + one admin connection) + workers x per-worker (1 cleaning
    connection + the pool it hands to tests)

out of what the server really allows: ``max_connections`` minus the reserved slots, the
role's ``rolconnlimit``, the maintenance database's ``datconnlimit``, minus what other
sessions hold. Everything is a session advisory lock on the run's lock connection (the one
that holds its liveness lock), so a run that dies gives its share back with its session:

- ``(MUTEX, 0)``, a transaction lock: one admission decision at a time;
- ``(TICKET, arrival)``: a waiting run's place in the queue (first come, first served);
- ``(SLOT, i)``: one per connection an admitted run reserved (a semaphore).

Sessions are attributed to an admitted run when they hold its slots or are connected to a
database its marker names; anything else (other applications, waiting runs, a detached
``up``'s tests) is counted as it is. When runs queue behind it, or the room is short, a run
shrinks its pools towards the minimum (one pooled connection per worker) instead of waiting.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from testdb.errors import ServerError
from testdb.ownership import LOCK_NAMESPACE, list_databases, lock_key
from testdb.provision import MAX_PARALLEL_CLONES
from testdb.servers.base import ServerInfo, connect, describe

if TYPE_CHECKING:
    from testdb.config import Settings

# First keys of admission's advisory locks (testdb's liveness lock uses 0x7E57DB).
MUTEX_NAMESPACE = 0x7E57A0
TICKET_NAMESPACE = 0x7E57A1
SLOT_NAMESPACE = 0x7E57A2

OWN_CONNECTIONS = 2  # the lock connection (admission happens on it) + one admin connection
# While it provisions a run opens more, but its workers' share is idle then: the lock, the
# template hold, the build lock and the build session, a schema command's session; the
# clones (up to MAX_PARALLEL_CLONES) beside the lock and the template hold.
PROVISION_PEAK = 5
MIN_PER_WORKER = 2  # cleaning connection + a pool of one
WANT_PER_WORKER = 5  # cleaning connection + pool 2 + overflow 2
POLL_S = 0.5
REPEAT_NOTICE_S = 30.0


class AdmissionError(ServerError):
    """The server cannot (or did not in time) give a run the connections it needs."""


@dataclass(frozen=True)
class Limit:
    """One cap on connections: what it is called, how many, and who counts against it."""

    label: str
    limit: int
    scope: str  # "server" | "role" | "database"


@dataclass(frozen=True)
class Snapshot:
    """What the server looks like to one admission decision."""

    limits: list[Limit]
    used: dict[str, int]  # scope -> connections held by others (reserved or open)
    ahead: int  # waiting runs that arrived before us
    behind: int  # waiting runs that arrived after us


@dataclass
class Reservation:
    """The connections a run holds a right to; ``pool`` is its per-worker (size, overflow)."""

    connections: int
    pool: tuple[int, int]
    waited_s: float
    slots: list[int]


Notify = Callable[[str], None]


def split_pool(per_worker: int) -> tuple[int, int]:
    """A worker's connections -> (pool_size, max_overflow), after its cleaning connection."""
    pool = max(1, min(5, (per_worker - 1) * 2 // 3))
    return pool, max(0, per_worker - 1 - pool)


def demand(workers: int, per_worker: int) -> int:
    """Connections a run reserves: its own and its workers', never less than provisioning's peak."""
    return max(OWN_CONNECTIONS + workers * per_worker, PROVISION_PEAK)


def database_demand(workers: int) -> int:
    """Peak on the maintenance database: the lock, the template hold and the parallel clones."""
    return 2 + max(OWN_CONNECTIONS, min(MAX_PARALLEL_CLONES, workers + 1))


_LIMITS_SQL = """
SELECT current_setting('max_connections')::int
     - current_setting('superuser_reserved_connections')::int
     - CASE WHEN current_setting('reserved_connections', true) IS NULL THEN 0
            WHEN pg_has_role(current_user, 'pg_use_reserved_connections', 'MEMBER') THEN 0
            ELSE current_setting('reserved_connections')::int END,
       r.rolconnlimit, d.datconnlimit, current_user, current_database()
FROM pg_roles r, pg_database d
WHERE r.rolname = current_user AND d.datname = current_database()
"""


def read_limits(conn: psycopg.Connection[Any], headroom: int) -> list[Limit]:
    """Every cap that applies to this role on this database (unlimited ones left out)."""
    row = conn.execute(_LIMITS_SQL).fetchone()
    assert row is not None
    server, role_cap, db_cap, role, database = row
    limits = [
        Limit(f"max_connections (less reserved slots and {headroom} headroom)", server - headroom, "server")
    ]
    if role_cap >= 0:
        limits.append(Limit(f"role {role}'s connection limit", role_cap, "role"))
    if db_cap >= 0:
        limits.append(Limit(f"database {database}'s connection limit", db_cap, "database"))
    return limits


_SESSIONS_SQL = """
SELECT a.pid, a.usesysid = r.oid, a.datid = d.oid, a.datname
FROM pg_stat_activity a, pg_roles r, pg_database d
WHERE r.rolname = current_user AND d.datname = current_database()
  AND a.pid <> pg_backend_pid()
  AND (a.backend_type = 'client backend'  -- hidden (NULL) for other roles' sessions without pg_read_all_stats
       OR a.backend_type IS NULL AND a.usesysid IS NOT NULL AND a.datid IS NOT NULL)
"""

_LOCKS_SQL = """
SELECT pid, classid::bigint, objid::bigint FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2
  AND classid::bigint IN (%s, %s, %s) AND pid <> pg_backend_pid()
"""


def _unsigned(key: int) -> int:
    return key % 2**32


def _before(a: int, b: int) -> bool:
    """Ticket ``a`` was taken before ``b`` (tickets wrap: serial-number arithmetic)."""
    return 0 < (b - a) % 2**32 < 2**31


@dataclass
class Holders:
    """Who holds testdb's advisory locks, by backend pid."""

    slots: dict[int, int]  # pid -> admission slots held
    run_keys: dict[int, int]  # pid -> the liveness-lock key it holds
    tickets: list[tuple[int, int]]  # (pid, ticket) of waiting runs


def read_holders(conn: psycopg.Connection[Any]) -> Holders:
    holders = Holders({}, {}, [])
    for pid, namespace, key in conn.execute(_LOCKS_SQL, (LOCK_NAMESPACE, TICKET_NAMESPACE, SLOT_NAMESPACE)):
        if namespace == SLOT_NAMESPACE:
            holders.slots[pid] = holders.slots.get(pid, 0) + 1
        elif namespace == LOCK_NAMESPACE:
            holders.run_keys[pid] = int(key)
        else:
            holders.tickets.append((pid, int(key)))
    return holders


def admitted_databases(conn: psycopg.Connection[Any], holders: Holders) -> set[str]:
    """Databases whose marker names a run that holds admission slots."""
    admitted = {holders.run_keys[pid] for pid in holders.slots if pid in holders.run_keys}
    return {
        row.name
        for row in list_databases(conn)
        if row.marker is not None and _unsigned(lock_key(row.marker.run_id)) in admitted
    }


def count_used(
    sessions: list[tuple[int, bool, bool, str]], holders: Holders, theirs: set[str]
) -> dict[str, int]:
    """Connections others hold, per scope: admitted runs by reservation, the rest as they are."""
    used = {"server": 0, "role": 0, "database": 0}
    role_pids = {pid for pid, same_role, _, _ in sessions if same_role}
    for pid, same_role, same_db, datname in sessions:
        used["database"] += 1 if same_db else 0  # that cap counts real sessions only
        if pid not in holders.slots and datname not in theirs:
            used["server"] += 1
            used["role"] += 1 if same_role else 0
    for pid, count in holders.slots.items():
        used["server"] += count
        used["role"] += count if pid in role_pids else 0
    return used


def queue_position(tickets: list[tuple[int, int]], role_pids: set[int], ticket: int) -> tuple[int, int]:
    """(ahead, behind) among the waiting runs of our role: another role's wait is not ours."""
    queue = [key for pid, key in tickets if pid in role_pids]
    mine = _unsigned(ticket)
    return sum(1 for t in queue if _before(t, mine)), sum(1 for t in queue if _before(mine, t))


def snapshot(conn: psycopg.Connection[Any], limits: list[Limit], ticket: int) -> Snapshot:
    """Who holds what, from pg_stat_activity, pg_locks and the databases' markers."""
    sessions = conn.execute(_SESSIONS_SQL).fetchall()
    holders = read_holders(conn)
    used = count_used(sessions, holders, admitted_databases(conn, holders))
    role_pids = {pid for pid, same_role, _, _ in sessions if same_role}
    ahead, behind = queue_position(holders.tickets, role_pids, ticket)
    return Snapshot(limits, used, ahead, behind)


def room(snap: Snapshot) -> tuple[int, Limit]:
    """Connections free for us under the tightest server/role limit, and that limit."""
    caps = [
        (limit.limit - snap.used[limit.scope], limit) for limit in snap.limits if limit.scope != "database"
    ]
    return min(caps, key=lambda cap: cap[0])


def decide(snap: Snapshot, workers: int) -> int | None:
    """Per-worker connections to take now, or None to keep waiting."""
    if snap.ahead:
        return None
    for limit in snap.limits:
        if limit.scope == "database" and limit.limit - snap.used["database"] < database_demand(workers):
            return None
    free, _ = room(snap)
    fits = (free - OWN_CONNECTIONS) // max(workers, 1)
    if fits < MIN_PER_WORKER or free < demand(workers, MIN_PER_WORKER):
        return None
    # Others queue behind us: take the minimum so they run alongside instead of after.
    return MIN_PER_WORKER if snap.behind else min(WANT_PER_WORKER, fits)


def check_possible(limits: list[Limit], workers: int) -> None:
    """Fail at once when even an idle server could never admit this run."""
    need = demand(workers, MIN_PER_WORKER)
    for limit in limits:
        wanted = database_demand(workers) if limit.scope == "database" else need
        if wanted > limit.limit:
            most = max((limit.limit - OWN_CONNECTIONS) // MIN_PER_WORKER, 0)
            raise AdmissionError(
                f"too many workers: -n {workers} needs at least {wanted} connections;"
                f" {limit.label} is {limit.limit}",
                hint=f"use -n {most} or fewer, or raise that limit on the server",
            )


def _take_ticket(conn: psycopg.Connection[Any]) -> int:
    """A place in the queue: the arrival time in tenths of a second, made unique by the lock."""
    key = int(time.time() * 10) % 2**32
    while True:
        signed = key - 2**32 if key >= 2**31 else key
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (TICKET_NAMESPACE, signed)).fetchone()
        if row is not None and row[0]:
            return signed
        key = (key + 1) % 2**32


def _take_slots(conn: psycopg.Connection[Any], count: int) -> list[int]:
    """``count`` free slot locks (under the mutex, so nobody else is taking any)."""
    rows = conn.execute(
        "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 2 AND classid::bigint = %s",
        (SLOT_NAMESPACE,),
    ).fetchall()
    held = {int(r[0]) for r in rows}
    slots = [i for i in range(count + len(held)) if i not in held][:count]
    conn.execute("SELECT pg_advisory_lock(%s, i) FROM unnest(%s::int[]) AS i", (SLOT_NAMESPACE, slots))
    return slots


def _release(conn: psycopg.Connection[Any], namespace: int, keys: list[int]) -> None:
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT pg_advisory_unlock(%s, i) FROM unnest(%s::int[]) AS i", (namespace, keys))


def _try_admit(
    conn: psycopg.Connection[Any], limits: list[Limit], ticket: int, workers: int
) -> tuple[Snapshot, list[int], int]:
    """One decision under the mutex: (what we saw, the slots taken or [], per-worker)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (MUTEX_NAMESPACE,))
        snap = snapshot(conn, limits, ticket)
        per_worker = decide(snap, workers)
        if per_worker is None:
            return snap, [], 0
        return snap, _take_slots(conn, demand(workers, per_worker)), per_worker


def waiting_message(snap: Snapshot, workers: int) -> str:
    need = demand(workers, MIN_PER_WORKER)
    if snap.ahead:
        runs = "run" if snap.ahead == 1 else "runs"
        return f"waiting for {need} connections: {snap.ahead} {runs} ahead"
    free, limit = room(snap)
    return f"waiting for {need} connections: {max(free, 0)} free under {limit.label} ({limit.limit})"


def label_session(conn: psycopg.Connection[Any], run_id: str) -> None:
    """Name the lock connection after its run, so ``status --all`` can say whose it is."""
    name = f"testdb {run_id[:8]} {os.getpid()} {getpass.getuser()}@{socket.gethostname()}"
    conn.execute("SELECT set_config('application_name', %s, false)", (name[:63],))


# How PostgreSQL says a new session does not fit (max_connections, reserved slots, the
# role's or the database's CONNECTION LIMIT); libpq gives no SQLSTATE before a session exists.
FULL_SIGNS = ("too many clients", "too many connections", "connection slots are reserved")


def connect_waiting(info: ServerInfo, settings: Settings, notify: Notify) -> psycopg.Connection[Any]:
    """A run's first connection: while the server or role is full, wait (up to
    ``admission.wait``) instead of failing, since every run's share includes it."""
    deadline = time.monotonic() + settings.admission.wait
    said = False
    while True:
        try:
            return connect(info.admin_url)
        except ServerError as exc:
            if not any(sign in exc.message.lower() for sign in FULL_SIGNS):
                raise
            if time.monotonic() >= deadline:
                raise AdmissionError(
                    f"gave up after {settings.admission.wait:.0f}s waiting for a connection: {exc.message}",
                    hint="raise --wait (admission.wait), or raise the server limits",
                ) from None
            if not said:
                notify(f"waiting for a connection: {describe(info.admin_url)} is full")
                said = True
            time.sleep(POLL_S)


@contextlib.contextmanager
def reserve(
    info: ServerInfo,
    workers: int,
    settings: Settings,
    notify: Notify,
    *,
    conn: psycopg.Connection[Any] | None = None,
    run_id: str | None = None,
) -> Iterator[Reservation]:
    """Hold a share of the server's connections for as long as the block lasts.

    ``conn`` is the run's lock connection (``RunLock.conn``): the reservation dies with it.
    Without one (a detached ``up``) a connection is opened for the block. Waits up to
    ``settings.admission.wait`` seconds, calling ``notify`` with what it waits for.
    """
    with contextlib.ExitStack() as stack:
        if conn is None:
            conn = stack.enter_context(connect_waiting(info, settings, notify))
        if run_id is not None:
            label_session(conn, run_id)
        reservation = _admit(info, conn, workers, settings, notify)
        try:
            yield reservation
        finally:
            _release(conn, SLOT_NAMESPACE, reservation.slots)


class _Waiting:
    """Says what a run waits for: when its place in the queue changes, else every 30s."""

    def __init__(self, notify: Notify) -> None:
        self.notify, self.started = notify, time.monotonic()
        self.said: int | None = None  # runs ahead when we last spoke (free counts are too noisy)
        self.said_at = 0.0

    def tell(self, snap: Snapshot, message: str) -> None:
        now = time.monotonic()
        if snap.ahead != self.said or now - self.said_at > REPEAT_NOTICE_S:
            self.notify(message)
            self.said, self.said_at = snap.ahead, now

    def admitted(self, connections: int) -> float:
        waited = time.monotonic() - self.started
        if self.said is not None:
            self.notify(f"admitted after {waited:.0f}s: {connections} connections")
        return waited


def _admit(
    info: ServerInfo, conn: psycopg.Connection[Any], workers: int, settings: Settings, notify: Notify
) -> Reservation:
    limits = read_limits(conn, settings.max_connections_headroom)
    check_possible(limits, workers)
    waiting = _Waiting(notify)
    deadline = waiting.started + settings.admission.wait
    ticket = _take_ticket(conn)
    try:
        while True:
            snap, slots, per_worker = _try_admit(conn, limits, ticket, workers)
            if slots:
                return Reservation(len(slots), split_pool(per_worker), waiting.admitted(len(slots)), slots)
            message = waiting_message(snap, workers)
            if time.monotonic() >= deadline:
                raise AdmissionError(
                    f"gave up after {settings.admission.wait:.0f}s on {describe(info.admin_url)}: {message}",
                    hint="raise --wait (admission.wait), use fewer workers (-n), or raise the server limits",
                )
            waiting.tell(snap, message)
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.01)))
    finally:
        _release(conn, TICKET_NAMESPACE, [ticket])
