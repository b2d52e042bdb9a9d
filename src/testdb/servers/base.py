"""What a server is, once testdb has one, and how to reach it.

Each backend (url, local, embedded, docker) is a small module with ``acquire`` and
``release``; :mod:`testdb.servers` picks one (resolution order in ``resolve_kind``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.engine import URL, make_url

from testdb.errors import ServerError

CONNECT_TIMEOUT_S = 5
_PASSWORD_IN_TEXT = re.compile(r"(password=)\S+|(://[^:/@\s]*:)[^@\s]*@")


@dataclass
class ServerInfo:
    """A PostgreSQL server testdb is using, serialisable into the state file.

    ``url`` is the maintenance connection (libpq form, password included: the state
    file is mode 0600 and the URL is never printed unmasked).
    """

    kind: str
    url: str
    owned: bool = False
    reason: str = ""
    pid: int | None = None
    data_dir: str | None = None
    container_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def admin_url(self) -> URL:
        return make_url(self.url)

    @property
    def default_database(self) -> str:
        return self.admin_url.database or "postgres"

    def database_url(self, database: str) -> URL:
        """The URL of ``database`` on this server."""
        return self.admin_url.set(database=database)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerInfo:
        return cls(**data)


def libpq_dsn(url: URL) -> str:
    """``url`` as a libpq connection string, whatever SQLAlchemy driver it names."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def scrub(text: str) -> str:
    """Remove anything that looks like a password from a driver's error text."""
    return _PASSWORD_IN_TEXT.sub(
        lambda m: (m.group(1) or m.group(2)) + "***" + ("" if m.group(1) else "@"), text
    )


def describe(url: URL) -> str:
    """host:port/db for messages (no user, no password)."""
    host = url.host or str(url.query.get("host", "local socket"))
    return f"{host}:{url.port or 5432}/{url.database or 'postgres'}"


def connect(
    url: URL, *, autocommit: bool = True, timeout: int = CONNECT_TIMEOUT_S
) -> psycopg.Connection[Any]:
    """Open a connection or raise a ServerError that says why, without the password."""
    try:
        return psycopg.connect(
            libpq_dsn(url),
            autocommit=autocommit,
            connect_timeout=timeout,
            application_name="testdb",
        )
    except psycopg.OperationalError as exc:
        raise connection_error(url, exc) from None


def connection_error(url: URL, exc: Exception) -> ServerError:
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


def answers(url: URL, timeout: int = 2) -> bool:
    """True if a server accepts a connection at ``url`` right now."""
    with contextlib.suppress(ServerError), connect(url, timeout=timeout):
        return True
    return False


@contextlib.contextmanager
def admin_connection(info: ServerInfo) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the server's maintenance database, closed on exit."""
    conn = connect(info.admin_url)
    try:
        yield conn
    finally:
        conn.close()


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_major_version(conn: psycopg.Connection[Any]) -> int:
    return conn.info.server_version // 10000
