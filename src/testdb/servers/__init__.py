"""Where a server comes from, and the order ``auto`` tries them in.

``auto``: a URL if one is given, else a local server if one answers, else Docker if an
engine answers, else the embedded cluster. The choice and its reason are reported once.
"""

from __future__ import annotations

from types import ModuleType

from testdb.config import Settings
from testdb.errors import ConfigError, DockerError
from testdb.servers import embedded, local, url
from testdb.servers.base import ServerInfo

__all__ = ["ServerInfo", "acquire_server", "find_server", "release_server"]


def _docker_module() -> ModuleType:
    # Imported lazily: the docker SDK is slow to import and most runs never need it.
    from testdb.servers import docker

    return docker


def acquire_server(settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
    """Get a server of the configured kind (``auto`` resolves as the module doc says)."""
    kind = settings.server
    if settings.url and kind in ("local", "embedded", "docker"):
        raise ConfigError(
            f"--url conflicts with --server {kind}",
            hint="drop --server (auto uses the URL) or use --server url; TESTDB_URL counts as --url",
        )
    given = url.given_url(settings.url)
    if kind == "url" or (kind == "auto" and given):
        if not given:
            raise ConfigError(
                "--server url needs a URL", hint="pass --url or set TESTDB_URL / TEST_DATABASE_URL"
            )
        return url.acquire(*given)
    if kind == "local":
        return local.acquire()
    if kind == "embedded":
        return embedded.acquire(settings.embedded, run_id, notices)
    if kind == "docker":
        return _docker_module().acquire(settings, run_id, notices)  # type: ignore[no-any-return]
    found = local.find()
    if found is not None:
        return found
    docker = _docker_module()
    if docker.engine_answers():
        try:
            info = docker.acquire(settings, run_id, notices)
        except DockerError as exc:
            # Common offline: the engine answers but the image cannot be pulled.
            notices.append(f"Docker engine answers but {exc.message}; using the embedded server")
        else:
            info.reason = "no local server; Docker engine answers: " + info.reason
            return info  # type: ignore[no-any-return]
    info = embedded.acquire(settings.embedded, run_id, notices)
    info.reason = "no local server or Docker engine: " + info.reason
    return info


def find_server(settings: Settings) -> ServerInfo | None:
    """An already-running server to inspect (prune): a given URL, else a local server.

    Never starts one: there is nothing to reclaim on a server that was not running.
    """
    given = url.given_url(settings.url)
    if given:
        return url.acquire(*given)
    if settings.server in ("auto", "local"):
        return local.find()
    return None


def release_server(info: ServerInfo, *, force: bool = False) -> None:
    """Stop what testdb started (kept servers survive unless ``force``); others are left alone."""
    if info.kind == "embedded":
        embedded.release(info, force=force)
    elif info.kind == "docker":
        _docker_module().release(info, force=force)
