"""An existing server named by a URL (``--url``, ``TESTDB_URL`` or the seed's ``TEST_DATABASE_URL``)."""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from testdb.errors import ConfigError
from testdb.servers.base import ServerInfo, connect

KIND = "url"
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


def parse_server_url(text: str) -> URL:
    """Validate a PostgreSQL URL; errors never echo the password."""
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ConfigError(
            "malformed database URL",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        ) from None
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


def acquire(text: str, source: str) -> ServerInfo:
    url = parse_server_url(text)
    connect(url).close()
    return ServerInfo(kind=KIND, url=url.render_as_string(hide_password=False), reason=f"URL from {source}")


def release(info: ServerInfo) -> None:
    """Nothing to stop: the server is not ours."""
