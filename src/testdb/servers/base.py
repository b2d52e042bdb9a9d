"""What a server is, once testdb has one, how to reach it, and the backends' interface.

Each backend (url, local, embedded, docker) is a module with a ``BACKEND`` object that
satisfies :class:`Backend`; :mod:`testdb.servers` keeps the registry by kind and resolves
``auto``. Backends report facts (:class:`~testdb.ownership.Resource`); whether something
is an orphan is the janitor's decision (:mod:`testdb.prune`), never a backend's.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol

from testdb.errors import ServerError
from testdb.ownership import Resource
from testdb.urls import PgUrl, libpq_dsn, make_url

if TYPE_CHECKING:
    import psycopg

    from testdb.config import Settings

CONNECT_TIMEOUT_S = 5
_PASSWORD_IN_TEXT = re.compile(r"(password=)\S+|(://[^:/@\s]*:)[^@\s]*@")

ServerKind = Literal["url", "local", "embedded", "docker"]
SERVER_KINDS: tuple[ServerKind, ...] = ("url", "local", "embedded", "docker")


@dataclass
class ServerInfo:
    """A PostgreSQL server testdb is using, serialisable into the state file.

    ``url`` is the maintenance connection (libpq form, password included: the state
    file is mode 0600 and the URL is never printed unmasked).
    """

    kind: ServerKind
    url: str
    owned: bool = False  # testdb started it (embedded cluster, container)
    reason: str = ""
    keep: bool = False  # survives the run: a kept cluster, a reused container
    pid: int | None = None
    data_dir: str | None = None
    container_id: str | None = None
    version: str | None = None
    image: str | None = None
    docker_host: str | None = None

    @property
    def admin_url(self) -> PgUrl:
        return make_url(self.url)

    @property
    def default_database(self) -> str:
        return self.admin_url.database or "postgres"

    @property
    def stops_on_release(self) -> bool:
        """Whether releasing it (without force) stops the server."""
        return self.owned and not self.keep

    def database_url(self, database: str) -> PgUrl:
        """The URL of ``database`` on this server."""
        return self.admin_url.set(database=database)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Backend(Protocol):
    """Where servers of one kind come from and go to."""

    kind: ServerKind

    def acquire(self, settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
        """Find or start a server; ``notices`` collects what the user should be told once."""

    def release(self, info: ServerInfo, *, force: bool = False) -> None:
        """Stop what this backend started (kept servers survive unless ``force``)."""

    def detach(self, info: ServerInfo, expires: float | None) -> None:
        """Hand a server from its starting process to a lease (detached ``testdb up``)."""

    def describe(self, info: ServerInfo) -> str | None:
        """One status line about the server process (container, cluster), if any."""

    def resources(self) -> list[Resource]:
        """Every server of this kind testdb started on this machine (facts, for prune)."""

    def remove(self, resource: Resource) -> None:
        """Stop and delete one of them (the janitor decided it is an orphan)."""


class NoResources:
    """Backend half for servers testdb never starts (url, local): nothing to stop or reap."""

    def release(self, info: ServerInfo, *, force: bool = False) -> None:
        """Nothing to stop: the server is not ours."""

    def detach(self, info: ServerInfo, expires: float | None) -> None:
        """Nothing to hand over."""

    def describe(self, info: ServerInfo) -> str | None:
        return None

    def resources(self) -> list[Resource]:
        return []

    def remove(self, resource: Resource) -> None:
        """Never called: there are no resources."""


def scrub(text: str) -> str:
    """Remove anything that looks like a password from a driver's error text."""
    return _PASSWORD_IN_TEXT.sub(
        lambda m: (m.group(1) or m.group(2)) + "***" + ("" if m.group(1) else "@"), text
    )


def describe(url: PgUrl) -> str:
    """host:port/db for messages (no user, no password)."""
    host = url.host or str(url.query.get("host", "local socket"))
    return f"{host}:{url.port or 5432}/{url.database or 'postgres'}"


def connect(
    url: PgUrl, *, autocommit: bool = True, timeout: int = CONNECT_TIMEOUT_S
) -> psycopg.Connection[Any]:
    """Open a connection or raise a ServerError that says why, without the password."""
    import psycopg

    try:
        return psycopg.connect(
            libpq_dsn(url),
            autocommit=autocommit,
            connect_timeout=timeout,
            application_name="testdb",
        )
    except psycopg.OperationalError as exc:
        raise connection_error(url, exc) from None


def connection_error(url: PgUrl, exc: Exception) -> ServerError:
    """Translate a driver error into one line and a hint."""
    text = scrub(str(exc)).strip()
    where = describe(url)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return ServerError(
            f"authentication failed for user {url.username!r} at {where}",
            hint="check the user and password in the URL (the password is not shown)",
        )
    if "does not exist" in lowered and "database" in lowered:
        return ServerError(
            f"database {url.database!r} does not exist on {where}",
            hint="the URL's database must exist; testdb connects to it to manage others",
        )
    if "role" in lowered and "does not exist" in lowered:
        return ServerError(f"role {url.username!r} does not exist on {where}")
    return ServerError(f"cannot connect to PostgreSQL at {where}: {_reason(text) or type(exc).__name__}")


def _reason(text: str) -> str:
    """libpq's reason (e.g. 'Connection refused'), without its multi-line advice."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    failed = [line for line in lines if "failed: " in line]
    if failed:
        return failed[-1].rsplit("failed: ", 1)[1].strip()
    return lines[0] if lines else ""


def wait_ready(
    url: PgUrl, timeout: float, *, gone: Callable[[], str | None] = lambda: None, poll: float = 0.02
) -> bool:
    """The one readiness probe: True once a real connection succeeds within ``timeout``.

    ``gone`` is asked between attempts and returns a reason when the server can no longer
    come up (its process exited): waiting stops early with that as a ServerError.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ServerError), connect(url, timeout=max(1, min(2, int(timeout)))):
            return True
        reason = gone()
        if reason is not None:
            raise ServerError(reason)
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


@contextlib.contextmanager
def admin_connection(info: ServerInfo) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the server's maintenance database, closed on exit."""
    conn = connect(info.admin_url)
    try:
        yield conn
    finally:
        conn.close()


def server_major_version(conn: psycopg.Connection[Any]) -> int:
    return conn.info.server_version // 10000
