"""An existing server named by a URL (``--url``, ``TESTDB_URL`` or the seed's ``TEST_DATABASE_URL``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from testdb.errors import ConfigError
from testdb.servers.base import NoResources, ServerInfo, ServerKind, connect
from testdb.urls import PgUrl, make_url

if TYPE_CHECKING:
    from testdb.config import Settings

KIND: ServerKind = "url"
URL_VARIABLES = ("TESTDB_URL", "TEST_DATABASE_URL")


def given_url(setting: str | None) -> tuple[str, str] | None:
    """The URL the user gave and where it came from, or None."""
    if setting:
        return setting, "--url/TESTDB_URL"
    if os.environ.get("TESTDB_RUN_ID"):
        # TEST_DATABASE_URL here was exported by a testdb run (eval "$(testdb up)"): it
        # names that run's serial database, not a server to build another run on.
        return None
    for name in URL_VARIABLES[1:]:
        value = os.environ.get(name)
        if value:
            return value, name
    return None


def parse_server_url(text: str) -> PgUrl:
    """Validate a PostgreSQL URL; errors never echo the password."""
    url = make_url(text)
    scheme = url.drivername.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"unsupported URL scheme {url.drivername!r}: testdb needs PostgreSQL",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    if not url.host and not url.query.get("host"):
        raise ConfigError("database URL has no host", hint="e.g. postgresql://user@127.0.0.1:5432/postgres")
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(
            f"port {url.port} in the database URL is out of range (1-65535)",
            hint="e.g. postgresql://user@127.0.0.1:5432/postgres",
        )
    return url.set(drivername="postgresql")


def acquire_url(text: str, source: str) -> ServerInfo:
    """The server ``text`` names, after one real connection proves it answers."""
    url = parse_server_url(text)
    connect(url).close()
    return ServerInfo(kind=KIND, url=url.render_as_string(hide_password=False), reason=f"URL from {source}")


class UrlBackend(NoResources):
    kind: ServerKind = KIND

    def acquire(self, settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
        given = given_url(settings.url)
        if not given:
            raise ConfigError(
                "--server url needs a URL", hint="pass --url or set TESTDB_URL / TEST_DATABASE_URL"
            )
        return acquire_url(*given)


BACKEND = UrlBackend()
