"""The backends by kind, and the order ``auto`` tries them in.

``auto``: a URL if one is given, else a local server if one answers, else Docker if an
engine answers, else the embedded cluster. The choice and its reason are reported once.
Backends are imported when first asked for: the docker SDK alone takes half a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from testdb.errors import ConfigError, DockerError
from testdb.servers.base import SERVER_KINDS, Backend, ServerInfo, ServerKind

if TYPE_CHECKING:
    from testdb.config import Settings

__all__ = [
    "SERVER_KINDS",
    "Backend",
    "ServerInfo",
    "acquire_server",
    "backend",
    "find_server",
    "release_server",
]


def backend(kind: ServerKind) -> Backend:
    """The backend of ``kind`` (its module is imported on first use)."""
    if kind not in SERVER_KINDS:
        raise ConfigError(f"unknown server kind {kind!r}", hint="server kinds: " + ", ".join(SERVER_KINDS))
    module = importlib.import_module(f"testdb.servers.{kind}")
    found: Backend = module.BACKEND
    return found


def acquire_server(settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
    """Get a server of the configured kind (``auto`` resolves as the module doc says)."""
    from testdb.servers import url

    kind = settings.server
    if settings.url and kind in ("local", "embedded", "docker"):
        raise ConfigError(
            f"--url conflicts with --server {kind}",
            hint="drop --server (auto uses the URL) or use --server url; TESTDB_URL counts as --url",
        )
    if kind == "url" or (kind == "auto" and url.given_url(settings.url)):
        return backend("url").acquire(settings, run_id, notices)
    if kind != "auto":
        return backend(kind).acquire(settings, run_id, notices)
    return _auto(settings, run_id, notices)


def _auto(settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
    from testdb.servers import docker, local

    found = local.find()
    if found is not None:
        return found
    if docker.engine_answers():
        try:
            info = docker.BACKEND.acquire(settings, run_id, notices)
        except DockerError as exc:
            # Common offline: the engine answers but the image cannot be pulled.
            notices.append(f"Docker engine answers but {exc.message}; using the embedded server")
        else:
            info.reason = "no local server; Docker engine answers: " + info.reason
            return info
    info = backend("embedded").acquire(settings, run_id, notices)
    info.reason = "no local server or Docker engine: " + info.reason
    return info


def find_server(settings: Settings) -> ServerInfo | None:
    """An already-running server to inspect (prune): a given URL, else a local server.

    Never starts one: there is nothing to reclaim on a server that was not running.
    """
    from testdb.servers import local, url

    given = url.given_url(settings.url)
    if given:
        return url.acquire_url(*given)
    if settings.server in ("auto", "local"):
        return local.find()
    return None


def release_server(info: ServerInfo, *, force: bool = False) -> None:
    """Stop what testdb started (kept servers survive unless ``force``); others are left alone."""
    backend(info.kind).release(info, force=force)
