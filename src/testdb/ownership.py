"""Who owns what, and who is still alive: markers, leases, liveness locks, one orphan policy.

A leaf module (it imports nothing of testdb but errors-free helpers), so the janitor, the
lifecycle, the worker and the backends' callers all judge ownership the same way.

- Every database testdb creates carries a :class:`Marker` in its comment
  (``COMMENT ON DATABASE … IS 'testdb:{json}'``).
- A process-bound run (``testdb run``, pytest self-provisioning) holds a session advisory
  lock ``(LOCK_NAMESPACE, lock_key(run_id))`` for its whole life (:class:`RunLock`),
  visible to any client in ``pg_locks``, from any host; a detached ``testdb up`` records a
  lease (``expires``) instead.
- A run is alive while it holds its lock or its lease has not expired
  (:meth:`Liveness.alive`). Servers testdb started (embedded clusters, containers) are
  judged by :func:`orphaned`, the one policy ``prune`` applies to every backend's facts.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import psycopg

MARKER_PREFIX = "testdb:"
LOCK_NAMESPACE = 0x7E57DB  # first key of every advisory lock testdb takes
# A server or cluster younger than this may still be starting, or be owned by a process on
# another host that has not taken its liveness lock yet: it is never judged by reachability.
GRACE_S = 300.0

Role = Literal["serial", "worker", "template", "building", "fresh", "failed"]
ResourceStatus = Literal["running", "created", "exited", "laying-out"]


@dataclass
class Marker:
    """Who owns a database, stored as its comment."""

    run_id: str
    role: str  # a Role; kept a plain str so markers written by other versions still parse
    prefix: str
    user: str
    host: str
    pid: int
    created: float
    expires: float | None = None  # a lease (detached `up`); None = bound to a live process
    template: str | None = None  # the template a clone was made from (never dropped under it)
    chain: list[str] | None = None  # templates: the applied revisions, "id:digest" (testdb.migrations)
    used: float | None = None  # templates: last reuse, for keeping the most recently used

    @classmethod
    def for_run(cls, run_id: str, role: Role, prefix: str, ttl: float | None) -> Marker:
        now = time.time()
        expires = None if ttl is None else now + ttl
        return cls(run_id, role, prefix, getpass.getuser(), socket.gethostname(), os.getpid(), now, expires)

    def with_role(self, role: Role) -> Marker:
        return Marker(**{**asdict(self), "role": role})

    def comment(self) -> str:
        return MARKER_PREFIX + json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def parse(cls, comment: str | None) -> Marker | None:
        if not comment or not comment.startswith(MARKER_PREFIX):
            return None
        try:
            data = json.loads(comment[len(MARKER_PREFIX) :])
            known = {f.name for f in fields(cls)}  # fields added by a newer version are ignored
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError, AttributeError):
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


def list_databases(conn: psycopg.Connection[Any]) -> list[DatabaseRow]:
    """Every database on the server with its marker (None if not testdb's) and session count."""
    rows = conn.execute(
        "SELECT d.datname, shobj_description(d.oid, 'pg_database'),"
        " (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid())"
        " FROM pg_database d ORDER BY d.datname"
    ).fetchall()
    return [DatabaseRow(name, Marker.parse(comment), int(n)) for name, comment, n in rows]


def set_marker(conn: psycopg.Connection[Any], name: str, marker: Marker) -> None:
    from psycopg import sql

    conn.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker.comment()))
    )


class RunLock:
    """Holds a run's liveness lock on a dedicated connection for as long as it is open."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], run_id: str) -> None:
        self._connect, self.run_id = connect, run_id
        self.conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> RunLock:
        self.conn = self._connect()
        self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, lock_key(self.run_id)))
        return self

    def __exit__(self, *exc: object) -> None:
        import psycopg

        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()  # closing the session releases the lock


@dataclass(frozen=True)
class Liveness:
    """A snapshot of which runs hold their lock, read once and asked many times."""

    live_keys: frozenset[int]
    now: float = field(default_factory=time.time)

    @classmethod
    def read(cls, conn: psycopg.Connection[Any]) -> Liveness:
        rows = conn.execute(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 2 AND classid = %s::oid",
            (LOCK_NAMESPACE,),
        ).fetchall()
        return cls(frozenset(int(r[0]) for r in rows))

    def holds_lock(self, run_id: str) -> bool:
        return _unsigned(lock_key(run_id)) in self.live_keys

    def alive(self, marker: Marker) -> bool:
        """A run is alive while it holds its lock, or while its lease has not expired."""
        return self.run_alive(marker.run_id, marker.expires)

    def run_alive(self, run_id: str, expires: float | None) -> bool:
        return self.holds_lock(run_id) or (expires is not None and self.now < expires)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(host: str | None, pid: int | None) -> bool | None:
    """Whether an owning process lives: only knowable for this host (None elsewhere)."""
    if not host or pid is None or host != socket.gethostname():
        return None
    return pid_alive(pid)


@dataclass(frozen=True)
class Resource:
    """A server testdb started (an embedded cluster, a container), as its backend reports it.

    Facts only: whether it is an orphan is decided by :func:`orphaned`.
    """

    kind: str
    ident: str  # the cluster's directory, the container's id
    status: ResourceStatus
    created: float
    owner_host: str | None = None
    owner_pid: int | None = None
    expires: float | None = None  # a detached run's lease, where the backend records one
    kept: bool = False  # kept/reused on purpose: survives its runs
    url: str | None = field(default=None, repr=False)  # the server's own word on its runs (a password)
    answers: Callable[[], bool] | None = None
    label: str = ""  # how to name it to a user: "embedded cluster /dev/shm/…"


def orphaned(resource: Resource, live_run: Callable[[Resource], bool | None], now: float) -> bool:
    """The one policy: is this server no live run's any more?

    ``live_run`` asks the server whether a live run (lock or lease) has databases on it
    (None: it could not be asked). A process on another host is never judged by its pid.
    """
    if resource.status == "exited":
        return True
    young = now - resource.created < GRACE_S
    if resource.status == "laying-out":
        return not young
    owner = owner_alive(resource.owner_host, resource.owner_pid)
    if resource.status == "created":  # never started: its owner died between create and start?
        return owner is False or not young
    if resource.kept:
        return not young and resource.answers is not None and not resource.answers()
    if owner is True or (resource.expires is not None and now < resource.expires):
        return False
    if resource.owner_host is not None and owner is None and young:
        return False  # another host's, just started
    return live_run(resource) is not True and (owner is False or not young)
