from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from psycopg import sql

from testdb.config import Settings, load_settings
from testdb.ownership import list_databases
from testdb.servers.base import ServerInfo, admin_connection, connect


@pytest.fixture
def prefix() -> str:
    return f"it_{secrets.token_hex(3)}"


@pytest.fixture
def make_settings(pg_server: ServerInfo, prefix: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings that point at ``pg_server`` by URL, with this test's prefix."""

    def make(**overrides: object) -> Settings:
        options: dict[str, object] = {"server": "url", "url": pg_server.url, "prefix": prefix}
        options.update(overrides)
        return load_settings(tmp_path, options)

    return make


@pytest.fixture
def database_names(pg_server: ServerInfo) -> Callable[[], set[str]]:
    def names() -> set[str]:
        with admin_connection(pg_server) as conn:
            return {row.name for row in list_databases(conn)}

    return names


@pytest.fixture(autouse=True)
def _drop_leftovers(pg_server: ServerInfo, prefix: str) -> Iterator[None]:
    yield
    from testdb.provision import drop_database

    with admin_connection(pg_server) as conn:
        for row in list_databases(conn):
            if row.name.startswith(prefix) and row.marker is not None:
                drop_database(conn, row.name)


@pytest.fixture
def capped_role(pg_server: ServerInfo) -> Iterator[Callable[[int], ServerInfo]]:
    """``capped_role(24)``: a new LOGIN CREATEDB role limited to 24 connections, as a server."""
    made: list[str] = []

    def make(limit: int) -> ServerInfo:
        name, password = f"testdb_adm_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        with connect(pg_server.admin_url) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB CONNECTION LIMIT {} PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(limit), sql.Literal(password)
                )
            )
        made.append(name)
        url = pg_server.admin_url.set(username=name, password=password)
        return ServerInfo(kind="url", url=url.render_as_string(hide_password=False))

    yield make
    with connect(pg_server.admin_url) as conn:
        for name in made:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
