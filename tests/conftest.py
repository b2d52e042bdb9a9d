"""One session fixture decides which real servers the integration tests run against.

``pg_server`` is parametrised over the local server (whatever libpq finds on this machine)
and an embedded cluster testdb starts itself; a backend is skipped only with the reason it
is unavailable. Set TESTDB_TEST_SERVERS=local (or embedded) to run against one only.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from psycopg import sql

from testdb.config import EmbeddedSettings
from testdb.errors import TestdbError
from testdb.ownership import Marker, set_marker
from testdb.provision import drop_database
from testdb.servers import embedded, local
from testdb.servers.base import ServerInfo, connect

SERVER_KINDS = [k for k in os.environ.get("TESTDB_TEST_SERVERS", "local,embedded").split(",") if k]


@pytest.fixture(scope="session", params=SERVER_KINDS)
def pg_server(request: pytest.FixtureRequest) -> Iterator[ServerInfo]:
    """A real PostgreSQL server: the machine's local one, or an embedded one started here."""
    if request.param == "local":
        info = local.find()
        if info is None:
            pytest.skip("no local PostgreSQL server answers")
        yield info
        return
    try:
        info = embedded.acquire(EmbeddedSettings(), "t" + secrets.token_hex(5), [])
    except TestdbError as exc:
        pytest.skip(f"embedded server unavailable: {exc}")
    try:
        yield info
    finally:
        embedded.release(info, force=True)


@pytest.fixture
def scratch_db(pg_server: ServerInfo) -> Iterator[str]:
    """A new, empty, testdb-marked database on ``pg_server``; its name. Dropped afterwards."""
    name = f"testdb_scratch_{secrets.token_hex(4)}"
    with connect(pg_server.admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        set_marker(conn, name, Marker.for_run(secrets.token_hex(6), "worker", "testdb_scratch", None))
    try:
        yield name
    finally:
        with connect(pg_server.admin_url) as conn:
            drop_database(conn, name)


@pytest.fixture
def scratch_url(pg_server: ServerInfo, scratch_db: str) -> str:
    """libpq URL of ``scratch_db``."""
    return pg_server.database_url(scratch_db).render_as_string(hide_password=False)
