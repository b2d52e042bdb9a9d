"""PostgreSQL URLs: parse, change one part, render, mask.

Why not SQLAlchemy's ``URL``: importing SQLAlchemy costs about half a second, and
``testdb env``/``status``/``down`` and the idle pytest plugin handle URLs without needing
anything else from it. :class:`PgUrl` keeps the subset of ``sqlalchemy.engine.URL``'s
interface that testdb uses (``set``, ``render_as_string``, the same attribute names), so
the two are interchangeable, and a property test checks both parse what it renders alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from testdb.errors import ConfigError

_HINT = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


@dataclass(frozen=True)
class PgUrl:
    """One database URL; ``query`` holds libpq parameters such as ``host=/socket/dir``."""

    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: dict[str, str] = field(default_factory=dict)

    def set(self, **changes: Any) -> PgUrl:
        """A copy with some parts replaced (``drivername=``, ``database=`` …)."""
        return replace(self, **changes)

    def render_as_string(self, hide_password: bool = True) -> str:
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + ("***" if hide_password else quote(self.password, safe=""))
            auth += "@"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        path = "/" + quote(self.database, safe="") if self.database is not None else ""
        query = "?" + urlencode(self.query) if self.query else ""
        return f"{self.drivername}://{auth}{host}{port}{path}{query}"

    def __str__(self) -> str:
        return self.render_as_string(hide_password=True)


def make_url(text: str) -> PgUrl:
    """Parse ``text``; a malformed URL is a ConfigError that never echoes the password."""
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ConfigError("malformed database URL", hint=_HINT) from None
    port = _port(parts.netloc)
    if not parts.scheme or "://" not in text:
        raise ConfigError("malformed database URL", hint=_HINT)
    return PgUrl(
        drivername=parts.scheme,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=_host(parts.netloc),
        port=port,
        database=unquote(parts.path[1:]) if len(parts.path) > 1 else None,
        query=dict(parse_qsl(parts.query)),
    )


def _port(netloc: str) -> int | None:
    """The port as written; range checks are the caller's (urlsplit refuses > 65535 outright)."""
    hostport = netloc.rpartition("@")[2].rpartition("]")[2]
    _, colon, port = hostport.rpartition(":")
    if not colon or not port:
        return None
    if not port.isdigit():
        raise ConfigError("malformed database URL", hint=_HINT)
    return int(port)


def _host(netloc: str) -> str | None:
    """The host as written (``urlsplit().hostname`` would lowercase it), brackets removed."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):
        return unquote(hostport[1:].partition("]")[0]) or None
    return unquote(hostport.partition(":")[0]) or None


def libpq_dsn(url: PgUrl) -> str:
    """``url`` as a libpq connection URI, whatever driver it names."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def with_driver(url: PgUrl, driver: str | None) -> str:
    """``postgresql+DRIVER://…`` (or plain ``postgresql://`` for None), password included."""
    name = "postgresql" if not driver else f"postgresql+{driver}"
    return url.set(drivername=name).render_as_string(hide_password=False)
