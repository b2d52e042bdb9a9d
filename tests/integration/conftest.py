from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testdb.config import Settings, load_settings
from testdb.ownership import list_databases
from testdb.servers.base import ServerInfo, admin_connection


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
