"""PostgreSQL in a Docker container that testdb starts, labels, and removes.

One :class:`PostgresContainer` per real container. Each one is created from
``docker.image`` (any image that honours ``POSTGRES_USER/PASSWORD/DB``, like the official
``postgres`` one) with a random password, its port published by Docker on 127.0.0.1 (the
host port is Docker's choice, so concurrent runs never collide), its data on tmpfs and
durability off. It is named ``testdb-<run id>``, never a global name, and labelled:

``testdb.run-id``       the run that created it
``testdb.owner``        ``{"user", "host", "pid"}`` of the creating process (JSON)
``testdb.config-hash``  image + command + settings: what makes two containers interchangeable
``testdb.reuse``        ``"1"`` if later runs may reuse it (``docker.reuse = true``)
``testdb.created``      ISO 8601 UTC

testdb removes, lists and prunes only containers carrying these labels. Readiness is a
real connection with the password, not log scraping. Every failure is one
:class:`DockerError` line with a hint, and a container created by a failed start is
removed before the error is raised.

Reuse (``docker.reuse = true``): a running container with ``testdb.reuse=1`` and the same
config hash (which includes the image's id) is reused after it answers a connection, so
the schema templates cached inside it are reused too; ``release`` keeps it unless forced
(``testdb down --stop-server``). Its password is read back from the container's
environment (see :attr:`PostgresContainer.password`).
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import hashlib
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from testdb.errors import DockerError, ServerError
from testdb.locks import file_lock
from testdb.ownership import Resource
from testdb.servers.base import ServerInfo, ServerKind, wait_ready
from testdb.urls import PgUrl

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

    from testdb.config import Settings

KIND: ServerKind = "docker"
SUPERUSER = "postgres"
DATABASE = "postgres"
PGDATA = "/var/lib/postgresql/data"
CONTAINER_PORT = "5432/tcp"
PUBLISH_HOST = "127.0.0.1"
PUBLISH_PORT: int | None = None  # None: Docker chooses a free host port (the only sane default)
SHM_SIZE = "256m"  # Docker's 64 MB /dev/shm is too small for parallel query workers
TEST_TUNING = {
    # Durability is pointless for a container that is removed after the run.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}
CONFIG_FORMAT = "1"  # bump when what goes into the config hash changes meaning

LABEL_RUN = "testdb.run-id"
LABEL_OWNER = "testdb.owner"
LABEL_HASH = "testdb.config-hash"
LABEL_REUSE = "testdb.reuse"
LABEL_CREATED = "testdb.created"

PING_TIMEOUT_S = 1
API_TIMEOUT_S = 60
POLL_S = 0.05
BIND_ATTEMPTS = 3
LOG_LINES = 3

_SEVERITY = re.compile(r"\b(FATAL|PANIC|ERROR|error):")
# docker-proxy: "listen tcp4 127.0.0.1:5432: bind: address already in use"; the engine's own
# allocator: "Bind for 127.0.0.1:5432 failed: port is already allocated".
_BIND_FAILURE = re.compile(r"(listen \S+ \S+: bind: [^)\"]+|Bind for \S+ failed: [^)\"]+)")
_ENGINE_HINT = "start Docker (`docker info` must answer), set DOCKER_HOST, or use --server embedded"


# -- the engine -------------------------------------------------------------------------


def _engine_failures() -> tuple[type[BaseException], ...]:
    """What the SDK raises when the engine cannot be reached or refuses a request."""
    import docker.errors
    import requests.exceptions

    return (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def _where(host: str | None = None) -> str:
    host = host or os.environ.get("DOCKER_HOST")
    return host or "the default Docker socket"


def _short(exc: BaseException) -> str:
    """One short line for an SDK or engine error."""
    line = " ".join(str(getattr(exc, "explanation", None) or exc).split())
    return line if len(line) <= 200 else line[:197] + "..."


def _unreachable(exc: BaseException) -> str:
    """Why the engine did not answer, in a few words (the SDK wraps it in three layers)."""
    text = str(exc)
    for needles, said in (
        (("FileNotFoundError", "No such file or directory"), "no such socket"),
        (("ConnectionRefusedError", "Connection refused"), "connection refused"),
        (("PermissionError", "Permission denied"), "permission denied"),
        (("timed out", "TimeoutError"), "timed out"),
    ):
        if any(needle in text for needle in needles):
            return said
    return _short(exc).removeprefix("Error while fetching server API version: ")


def _client(host: str | None = None, timeout: int = API_TIMEOUT_S) -> DockerClient:
    """A client for the engine at ``host`` (default: DOCKER_HOST / the CLI context) that answered."""
    import docker

    environment = {**os.environ, "DOCKER_HOST": host} if host else None
    try:
        # Short timeout first: a wedged engine must not hang testdb for a minute.
        client = docker.from_env(timeout=PING_TIMEOUT_S, environment=environment)
        client.ping()
    except _engine_failures() as exc:
        raise DockerError(
            f"cannot reach the Docker engine at {_where(host)}: {_unreachable(exc)}", hint=_ENGINE_HINT
        ) from None
    client.api.timeout = timeout
    return client


def engine_answers() -> bool:
    """True if a Docker engine answers a ping within about a second; never raises."""
    try:
        _client(timeout=PING_TIMEOUT_S).close()
    except Exception:
        return False
    return True


# -- one container ----------------------------------------------------------------------


class _BindError(DockerError):
    """The engine could not publish the port (a race with another listener): worth a retry."""


def _command() -> list[str]:
    args = ["postgres"]
    for key, value in TEST_TUNING.items():
        args += ["-c", f"{key}={value}"]
    return args


def config_hash(image: str, image_id: str) -> str:
    """What makes two containers interchangeable for ``docker.reuse``.

    The image's id is part of it: after a ``docker pull`` brings a newer image under the same
    tag, containers of the old one are no longer reused.
    """
    config = {
        "format": CONFIG_FORMAT,
        "image": image,
        "image_id": image_id,
        "command": _command(),
        "env": {"POSTGRES_USER": SUPERUSER, "POSTGRES_DB": DATABASE},
        "tmpfs": PGDATA,
        "shm": SHM_SIZE,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _owner() -> str:
    return json.dumps({"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid()})


def is_testdb_container(labels: dict[str, str]) -> bool:
    return all(key in labels for key in (LABEL_RUN, LABEL_OWNER, LABEL_HASH))


class PostgresContainer:
    """One container running PostgreSQL for testdb (or one testdb started earlier)."""

    def __init__(self, container: Container) -> None:
        self.container = container

    @property
    def id(self) -> str:
        return str(self.container.id)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.container.attrs.get("Config", {}).get("Labels") or {})

    @property
    def image(self) -> str:
        return str(self.container.attrs.get("Config", {}).get("Image", ""))

    @property
    def status(self) -> str:
        return str(self.container.attrs.get("State", {}).get("Status", "unknown"))

    @property
    def reuse(self) -> bool:
        return self.labels.get(LABEL_REUSE) == "1"

    @property
    def password(self) -> str | None:
        # The password lives only in the container's environment, never in a label: labels
        # show up in `docker ps --format` output and in CI logs, while the environment is
        # readable only through `docker inspect`, i.e. by whoever already controls the engine
        # (and so every container on it). That is what lets a reused container be reached
        # by a later run without testdb storing the password anywhere else.
        for item in self.container.attrs.get("Config", {}).get("Env") or []:
            name, _, value = str(item).partition("=")
            if name == "POSTGRES_PASSWORD":
                return value
        return None

    @property
    def host_port(self) -> int | None:
        bindings = (self.container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(CONTAINER_PORT)
        for binding in bindings or []:
            if binding.get("HostPort"):
                return int(binding["HostPort"])
        return None

    @property
    def created(self) -> float:
        """When testdb created it (epoch seconds); 0 if unknown."""
        with contextlib.suppress(ValueError, KeyError):
            return datetime.datetime.fromisoformat(self.labels[LABEL_CREATED]).timestamp()
        return 0.0

    @property
    def owner(self) -> dict[str, Any]:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            owner = json.loads(self.labels[LABEL_OWNER])
            if isinstance(owner, dict):
                return owner
        return {}

    @property
    def url(self) -> PgUrl:
        return PgUrl(
            "postgresql",
            username=SUPERUSER,
            password=self.password,
            host=PUBLISH_HOST,
            port=self.host_port,
            database=DATABASE,
        )

    def reload(self) -> None:
        self.container.reload()

    def start(self, timeout: float) -> None:
        """Start the container and wait until PostgreSQL accepts a real connection."""
        try:
            self.container.start()
        except _engine_failures() as exc:
            raise self._start_error(exc) from None
        self.reload()
        if self.host_port is None:
            raise DockerError(
                f"container {self.short_id} has no published port for {CONTAINER_PORT}",
                hint="the engine cannot publish ports here (dockerd --bridge=none?); use --server embedded",
            )
        try:
            ready = wait_ready(self.url, timeout, gone=self._exited, poll=POLL_S)
        except ServerError as exc:
            raise DockerError(
                exc.message,
                hint="the image must run PostgreSQL and honour POSTGRES_USER/PASSWORD/DB; check docker.image",
            ) from None
        if not ready:
            raise DockerError(
                f"PostgreSQL in container {self.short_id} did not accept connections"
                f" within {timeout:g}s: {self.log_tail()}",
                hint="raise docker.start_timeout (TESTDB_DOCKER__START_TIMEOUT) on a slow machine",
            )

    def _exited(self) -> str | None:
        """Why the container can no longer come up (it exited), or None while it may."""
        self.reload()
        if self.status in ("created", "running", "restarting"):
            return None
        code = self.container.attrs.get("State", {}).get("ExitCode")
        tail = self.log_tail()
        return f"container {self.short_id} from {self.image} exited during start (exit code {code}): {tail}"

    def _start_error(self, exc: BaseException) -> DockerError:
        bind = _BIND_FAILURE.search(str(getattr(exc, "explanation", None) or exc))
        if bind is not None:
            return _BindError(
                f"cannot publish PostgreSQL's port on {PUBLISH_HOST}: {bind.group(1).strip()}",
                hint="another process holds that port; retry, or free it",
            )
        return DockerError(f"cannot start container {self.short_id} from {self.image}: {_short(exc)}")

    def answers(self) -> bool:
        """Whether PostgreSQL in it accepts a connection right now."""
        if self.host_port is None or self.password is None:
            return False
        return wait_ready(self.url, 0)

    def log_tail(self, lines: int = LOG_LINES) -> str:
        """The last log lines, led by the last FATAL/ERROR line if that is earlier."""
        try:
            text = self.container.logs(stdout=True, stderr=True, tail=50).decode(errors="replace")
        except _engine_failures():
            return "(no log)"
        found = [line.strip() for line in text.splitlines() if line.strip()]
        tail = found[-lines:]
        severe = [line for line in found if _SEVERITY.search(line)]
        if severe and severe[-1] not in tail:
            match = _SEVERITY.search(severe[-1])
            assert match is not None
            tail = [severe[-1][match.start() :], *tail[-(lines - 1) :]]
        return " | ".join(tail) or "(empty log)"

    def remove(self) -> None:
        """Remove it with its anonymous volumes; already gone is fine."""
        import docker.errors

        try:
            self.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return
            raise DockerError(f"cannot remove container {self.short_id}: {_short(exc)}") from None

    def info(self, reason: str) -> ServerInfo:
        return ServerInfo(
            kind=KIND,
            url=self.url.render_as_string(hide_password=False),
            owned=True,
            reason=reason,
            keep=self.reuse,
            container_id=self.id,
            image=self.image,
            docker_host=os.environ.get("DOCKER_HOST"),
        )


# -- acquire / release ------------------------------------------------------------------


def _ensure_image(client: DockerClient, image: str, notices: list[str]) -> str:
    """The id of ``image``, pulled once if the engine does not have it."""
    import docker.errors

    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        pass
    except _engine_failures() as exc:
        raise DockerError(f"cannot look up image {image}: {_short(exc)}") from None
    notices.append(f"pulling {image} (not present on the Docker engine)")
    try:
        return str(client.images.pull(image).id)
    except _engine_failures() as exc:
        raise DockerError(
            f"image {image} is not present and could not be pulled: {_short(exc)}",
            hint=f"run `docker pull {image}` where a registry is reachable,"
            " or set docker.image (TESTDB_DOCKER__IMAGE) to an image the engine has",
        ) from None


def _reuse_lock(digest: str) -> contextlib.AbstractContextManager[None]:
    """Serialises reuse-or-start on this machine, so two runs do not both start one."""
    return file_lock(Path(platformdirs.user_cache_dir("testdb")) / "docker" / f"reuse-{digest}.lock")


def _find_reusable(client: DockerClient, image: str, digest: str) -> PostgresContainer | None:
    """A running reuse container of the same config that answers; dead ones are removed."""
    try:
        found = client.containers.list(
            all=True,
            ignore_removed=True,  # removed between listing and inspecting: not ours to care about
            filters={"label": [f"{LABEL_REUSE}=1", f"{LABEL_HASH}={digest}"]},
        )
    except _engine_failures() as exc:
        raise DockerError(f"cannot list containers: {_short(exc)}") from None
    for container in found:
        candidate = PostgresContainer(container)
        if not is_testdb_container(candidate.labels) or candidate.image != image:
            continue
        if candidate.status in ("exited", "dead"):
            candidate.remove()
        elif candidate.status == "running" and candidate.answers():
            return candidate
    return None


def _create(
    client: DockerClient, image: str, run_id: str, digest: str, reuse: bool, attempt: int
) -> PostgresContainer:
    labels = {
        LABEL_RUN: run_id,
        LABEL_OWNER: _owner(),
        LABEL_HASH: digest,
        LABEL_REUSE: "1" if reuse else "0",
        LABEL_CREATED: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    ports: dict[str, Any] = {CONTAINER_PORT: (PUBLISH_HOST, PUBLISH_PORT)}
    name = f"testdb-{run_id}" + (f"-{attempt}" if attempt else "")
    try:
        container = client.containers.create(
            image,
            command=_command(),
            name=name,
            environment={
                "POSTGRES_USER": SUPERUSER,
                "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
                "POSTGRES_DB": DATABASE,
            },
            ports=ports,
            tmpfs={PGDATA: "rw"},
            shm_size=SHM_SIZE,
            labels=labels,
            detach=True,
        )
    except _engine_failures() as exc:
        raise DockerError(f"cannot create a container from {image}: {_short(exc)}") from None
    except BaseException:  # interrupted: the engine may have created it all the same
        with contextlib.suppress(*_engine_failures()):
            client.containers.get(name).remove(force=True, v=True)
        raise
    return PostgresContainer(container)


def _start_new(client: DockerClient, settings: Settings, run_id: str, digest: str) -> PostgresContainer:
    image = settings.docker.image
    attempts = BIND_ATTEMPTS if PUBLISH_PORT is None else 1
    for attempt in range(attempts):
        pg = _create(client, image, run_id, digest, settings.docker.reuse, attempt)
        try:
            pg.start(settings.docker.start_timeout)
            return pg
        except _BindError:
            pg.remove()
            if attempt + 1 == attempts:
                raise
        except BaseException:
            pg.remove()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def acquire(settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
    """Start a PostgreSQL container for ``run_id`` (or, with ``docker.reuse``, reuse one)."""
    image = settings.docker.image
    client = _client()
    try:
        digest = config_hash(image, _ensure_image(client, image, notices))
        if settings.docker.reuse:
            with _reuse_lock(digest):
                pg = _find_reusable(client, image, digest)
                if pg is not None:
                    return pg.info(f"reusing container {pg.short_id} from {image} on {_addr(pg)}")
                pg = _start_new(client, settings, run_id, digest)
        else:
            pg = _start_new(client, settings, run_id, digest)
        return pg.info(f"container {pg.short_id} from {image} on {_addr(pg)}")
    finally:
        client.close()


def _addr(pg: PostgresContainer) -> str:
    return f"{PUBLISH_HOST}:{pg.host_port}"


def _get(client: DockerClient, container_id: str) -> PostgresContainer | None:
    import docker.errors

    try:
        return PostgresContainer(client.containers.get(container_id))
    except docker.errors.NotFound:
        return None
    except _engine_failures() as exc:
        raise DockerError(f"cannot inspect container {container_id[:12]}: {_short(exc)}") from None


def release(info: ServerInfo, *, force: bool = False) -> None:
    """Remove the run's container, unless it is a reuse container (and not ``force``).

    Only a container that carries testdb's labels is ever removed; one already gone is fine.
    """
    if not info.container_id or (info.keep and not force):
        return
    client = _client(info.docker_host)
    try:
        pg = _get(client, info.container_id)
        if pg is not None and is_testdb_container(pg.labels):
            pg.remove()
    finally:
        client.close()


# -- status and prune -------------------------------------------------------------------


def _labelled(client: DockerClient) -> list[PostgresContainer]:
    try:
        found = client.containers.list(
            all=True, ignore_removed=True, filters={"label": [LABEL_RUN, LABEL_HASH]}
        )
    except _engine_failures() as exc:
        raise DockerError(f"cannot list containers: {_short(exc)}") from None
    return [pg for pg in map(PostgresContainer, found) if is_testdb_container(pg.labels)]


@dataclass(frozen=True)
class ContainerRow:
    """One of testdb's containers as ``testdb status`` shows it."""

    id: str  # short id
    name: str
    run_id: str
    status: str
    ports: str
    image: str
    reuse: bool
    owner: str  # user@host:pid
    created: str  # ISO 8601


def _row(pg: PostgresContainer) -> ContainerRow:
    owner = pg.owner
    return ContainerRow(
        id=pg.short_id,
        name=str(pg.container.name),
        run_id=pg.labels.get(LABEL_RUN, ""),
        status=pg.status,
        ports=_addr(pg) if pg.host_port else "",
        image=pg.image,
        reuse=pg.reuse,
        owner=f"{owner.get('user', '?')}@{owner.get('host', '?')}:{owner.get('pid', '?')}",
        created=pg.labels.get(LABEL_CREATED, ""),
    )


def labelled_containers() -> list[ContainerRow]:
    """Every container carrying testdb's labels; raises DockerError if no engine answers."""
    client = _client()
    try:
        return [_row(pg) for pg in _labelled(client)]
    finally:
        client.close()


_STATUS = {"running": "running", "created": "created", "exited": "exited", "dead": "exited"}


def _resource(pg: PostgresContainer) -> Resource | None:
    """What a container says about itself; None while paused/restarting (its owner's business)."""
    status = _STATUS.get(pg.status)
    if status is None:
        return None
    owner = pg.owner
    pid = owner.get("pid")
    url = pg.url.render_as_string(hide_password=False) if pg.host_port and pg.password else None
    return Resource(
        KIND,
        pg.id,
        status,  # type: ignore[arg-type]  # values of _STATUS are ResourceStatus literals
        pg.created,
        owner_host=owner.get("host"),
        owner_pid=pid if isinstance(pid, int) else None,
        kept=pg.reuse,
        url=url,
        answers=pg.answers,
        label=f"docker container {pg.short_id}",
    )


def containers() -> list[Resource]:
    """testdb's containers on the engine, as facts for the janitor ([] if no engine answers)."""
    if not engine_answers():
        return []
    client = _client()
    try:
        return [r for r in map(_resource, _labelled(client)) if r is not None]
    finally:
        client.close()


class DockerBackend:
    kind: ServerKind = KIND

    def acquire(self, settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
        return acquire(settings, run_id, notices)

    def release(self, info: ServerInfo, *, force: bool = False) -> None:
        release(info, force=force)

    def detach(self, info: ServerInfo, expires: float | None) -> None:
        """Nothing to record: a detached run's lease lives in its databases' markers."""

    def describe(self, info: ServerInfo) -> str | None:
        short = (info.container_id or "")[:12]
        for row in labelled_containers():
            if row.id.startswith(short):
                reuse = "yes" if row.reuse else "no"
                return f"container: {row.name} {row.status} {row.ports} reuse={reuse}"
        return f"container: {short} is gone"

    def resources(self) -> list[Resource]:
        return containers()

    def remove(self, resource: Resource) -> None:
        remove_container(resource.ident)


BACKEND = DockerBackend()


def remove_container(container_id: str) -> bool:
    """Remove one of testdb's containers (``testdb prune``); False if it is gone or not testdb's."""
    client = _client()
    try:
        pg = _get(client, container_id)
        if pg is None or not is_testdb_container(pg.labels):
            return False
        pg.remove()
        return True
    finally:
        client.close()
