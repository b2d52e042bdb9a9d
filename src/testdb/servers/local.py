"""A server already running on this machine, found the way libpq finds one.

libpq's own defaults (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``~/.pgpass``,
its compiled-in socket directory) come first; when ``PGHOST`` is unset, the usual socket
directories and then ``localhost:5432`` are tried, because the libpq bundled with
psycopg's binary wheel may look in a different socket directory than the system's.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from testdb.errors import ServerError
from testdb.servers.base import NoResources, ServerInfo, ServerKind, wait_ready
from testdb.urls import PgUrl

if TYPE_CHECKING:
    from testdb.config import Settings

KIND: ServerKind = "local"
SOCKET_DIRS = ("/var/run/postgresql", "/tmp")  # noqa: S108 - where PostgreSQL puts sockets


def _candidates() -> list[dict[str, Any]]:
    base = {"dbname": os.environ.get("PGDATABASE", "postgres")}
    found = [base]
    if not os.environ.get("PGHOST"):
        found += [{**base, "host": d} for d in SOCKET_DIRS if os.path.isdir(d)]
        found.append({**base, "host": "localhost"})
    return found


def _tcp_answers(port: int, user: str, password: str | None, dbname: str) -> bool:
    url = PgUrl("postgresql", username=user, password=password, host="127.0.0.1", port=port, database=dbname)
    return wait_ready(url, 0)


def find() -> ServerInfo | None:
    """The first local server that accepts a connection, or None."""
    import psycopg

    for params in _candidates():
        try:
            conn = psycopg.connect(connect_timeout=2, autocommit=True, application_name="testdb", **params)
        except psycopg.OperationalError:
            continue
        with conn:
            info = conn.info
            host, port, user = info.host, info.port, info.user
            password, dbname = info.password or None, info.dbname
        if host.startswith("/") and _tcp_answers(port, user, password, dbname):
            # Same server over TCP: URLs built from parts ({host}:{port}) and every driver
            # understand 127.0.0.1, while a socket directory as "host" breaks many of them.
            where = f"127.0.0.1:{port} (found via socket {host})"
            host = "127.0.0.1"
        elif host.startswith("/"):
            where = f"socket {host}/.s.PGSQL.{port}"
        else:
            where = f"{host}:{port}"
        query = {"host": host} if host.startswith("/") else {}
        url = PgUrl(
            "postgresql",
            username=user,
            password=password,
            host=None if query else host,
            port=port,
            database=dbname,
            query=query,
        )
        return ServerInfo(
            kind=KIND,
            url=url.render_as_string(hide_password=False),
            reason=f"local server answering on {where}",
        )
    return None


class LocalBackend(NoResources):
    kind: ServerKind = KIND

    def acquire(self, settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
        info = find()
        if info is None:
            raise ServerError(
                "no local PostgreSQL server answers (tried libpq defaults, sockets and localhost:5432)",
                hint="start one, set PGHOST/PGPORT, or use --server embedded",
            )
        return info


BACKEND = LocalBackend()
