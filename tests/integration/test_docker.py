"""The Docker backend against a real engine.

The engine and the offline image ``testdb-postgres:15`` come from
``scripts/docker-test-engine.sh`` (run once per module; fast when both exist). When the
script cannot give us an engine on this machine, every test here is skipped with the
script's last lines as the reason: never silently passed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testdb import lifecycle
from testdb.config import Settings, load_settings
from testdb.errors import DockerError
from testdb.naming import new_run_id
from testdb.servers import docker as backend
from testdb.servers.base import ServerInfo, connect

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "docker-test-engine.sh"
IMAGE = "testdb-postgres:15"
FIRST_BUILD_TIMEOUT_S = 15 * 60


# -- fixtures ---------------------------------------------------------------------------


def orphaned_container_ids() -> list[str]:
    """What the janitor would remove on this engine (its one orphan policy over the facts)."""
    from testdb.prune import orphaned_servers

    return [r.ident for r in orphaned_servers() if r.kind == "docker"]


@pytest.fixture(autouse=True)
def _drop_leftovers() -> Iterator[None]:
    """Overrides the integration suite's autouse fixture: these tests bring their own server
    (so they are not parametrised over the local and embedded ones) and remove it themselves."""
    yield


def start_engine() -> str:
    """DOCKER_HOST of the test engine, or skip with the reason the script gave."""
    try:
        done = subprocess.run(
            [str(ENGINE_SCRIPT)], capture_output=True, text=True, timeout=FIRST_BUILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Docker engine: {ENGINE_SCRIPT.name} failed: {exc}")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("DOCKER_HOST="):
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        pytest.skip(f"no Docker engine: {ENGINE_SCRIPT.name} exited {done.returncode}: {tail}")
    return lines[-1].split("=", 1)[1]


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """DOCKER_HOST of a real engine, set in os.environ for this module."""
    host = start_engine()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", host)
        yield host


@pytest.fixture(scope="module")
def client(engine: str) -> Iterator[Any]:
    """The docker SDK's client, to look at the engine independently of testdb."""
    import docker

    sdk = docker.DockerClient(base_url=engine)
    yield sdk
    sdk.close()


def run_containers(client: Any, run_id: str) -> list[Any]:
    """Every container (any state) labelled with ``run_id``."""
    return list(client.containers.list(all=True, filters={"label": f"{backend.LABEL_RUN}={run_id}"}))


def volume_names(client: Any) -> set[str]:
    return {v.name for v in client.volumes.list()}


def docker_settings(tmp_path: Path, **docker: Any) -> Settings:
    return load_settings(
        tmp_path,
        {
            "server": "docker",
            "prefix": f"dk_{secrets.token_hex(3)}",
            "docker": {"image": IMAGE, **docker},
        },
    )


@pytest.fixture
def acquired(engine: str, client: Any, tmp_path: Path) -> Iterator[Callable[..., ServerInfo]]:
    """``acquired(**docker_settings)``: a container for a new run id, removed after the test."""
    run_ids: list[str] = []

    def start(**docker: Any) -> ServerInfo:
        run_id = new_run_id()
        run_ids.append(run_id)
        return backend.acquire(docker_settings(tmp_path, **docker), run_id, [])

    yield start
    for run_id in run_ids:
        for container in run_containers(client, run_id):
            container.remove(force=True, v=True)


def assert_refused(exc: pytest.ExceptionInfo[DockerError], says: str) -> None:
    """One line with ``says`` in it, and a hint."""
    assert says in exc.value.message, exc.value.message
    assert "\n" not in exc.value.message
    assert exc.value.hint and "\n" not in exc.value.hint


def assert_nothing_left(client: Any, run_id: str) -> None:
    left = [(c.short_id, c.status) for c in run_containers(client, run_id)]
    assert left == [], f"containers of run {run_id} left behind: {left}"


# -- start, connect, release ------------------------------------------------------------


def test_engine_answers(engine: str) -> None:
    assert backend.engine_answers() is True


def test_acquire_starts_a_labelled_tuned_container_that_answers(
    client: Any, acquired: Callable[..., ServerInfo]
) -> None:
    info = acquired()
    container = client.containers.get(info.container_id)
    run_id = container.labels[backend.LABEL_RUN]
    assert container.name == f"testdb-{run_id}"
    assert info.kind == "docker" and info.owned
    port = info.admin_url.port
    assert info.reason == f"container {container.short_id} from {IMAGE} on 127.0.0.1:{port}"
    assert info.image == IMAGE and info.keep is False
    digest = backend.config_hash(IMAGE, client.images.get(IMAGE).id)
    assert client.containers.get(info.container_id).labels[backend.LABEL_HASH] == digest
    url = info.admin_url
    assert (url.host, url.username, url.database) == ("127.0.0.1", "postgres", "postgres")
    assert url.password and len(url.password) >= 24

    labels = container.labels
    assert labels[backend.LABEL_HASH] == digest
    assert labels[backend.LABEL_REUSE] == "0"
    assert json.loads(labels[backend.LABEL_OWNER])["pid"] == os.getpid()
    assert backend.LABEL_CREATED in labels
    assert not any(url.password in value for value in labels.values()), "password in a label"
    host_config = container.attrs["HostConfig"]
    assert host_config["Tmpfs"] == {backend.PGDATA: "rw"}
    assert host_config["PortBindings"]["5432/tcp"][0]["HostIp"] == "127.0.0.1"

    with connect(info.admin_url) as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN"
                " ('fsync', 'synchronous_commit', 'full_page_writes', 'max_connections')"
            ).fetchall()
        )
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "300",
    }
    with pytest.raises(psycopg.OperationalError):  # the password is really checked
        psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", password="wrong", dbname="postgres"
        ).close()

    listed = {row.id: row for row in backend.labelled_containers()}
    assert listed[container.short_id].run_id == run_id
    assert listed[container.short_id].ports == f"127.0.0.1:{port}"
    assert listed[container.short_id].status == "running"

    backend.release(info)
    assert_nothing_left(client, run_id)
    backend.release(info)  # already gone: fine


def test_up_provisions_workers_and_down_removes_the_container(
    engine: str, client: Any, tmp_path: Path
) -> None:
    settings = docker_settings(tmp_path)
    volumes = volume_names(client)
    progress = lifecycle.Progress()
    state = lifecycle.up(settings, lifecycle.Request(2, False, root=tmp_path), progress=progress)
    try:
        assert state.server.kind == "docker"
        assert len(run_containers(client, state.run_id)) == 1
        for database in state.databases:
            with connect(state.server.database_url(database)) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == (database,)
        assert set(state.workers) == {"gw0", "gw1"}
    finally:
        lifecycle.teardown(state)
    assert_nothing_left(client, state.run_id)
    assert volume_names(client) - volumes == set()


def test_reuse_keeps_the_container_and_its_template_for_the_next_up(
    engine: str, client: Any, tmp_path: Path
) -> None:
    settings = docker_settings(tmp_path, reuse=True)
    first_progress, second_progress = lifecycle.Progress(), lifecycle.Progress()
    first = lifecycle.up(settings, lifecycle.Request(2, False, root=tmp_path), progress=first_progress)
    container_id = first.server.container_id
    try:
        assert first.server.keep is True
        lifecycle.teardown(first)
        kept = client.containers.get(container_id)
        assert kept.status == "running" and kept.labels[backend.LABEL_REUSE] == "1"

        second = lifecycle.up(settings, lifecycle.Request(2, False, root=tmp_path), progress=second_progress)
        assert second.server.container_id == container_id
        assert container_id is not None
        assert second.server.reason.startswith(f"reusing container {container_id[:12]}")
        assert first_progress.template_built is True
        assert second_progress.template_built is False
        lifecycle.teardown(second, stop_server=True)
        assert client.containers.list(all=True, filters={"id": container_id}) == []
    finally:
        for container in client.containers.list(all=True, filters={"id": container_id}):
            container.remove(force=True, v=True)


def test_concurrent_runs_never_touch_each_others_containers(
    client: Any, acquired: Callable[..., ServerInfo]
) -> None:
    results: list[ServerInfo] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            results.append(acquired())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    one, two = results
    assert one.container_id != two.container_id
    assert one.admin_url.port != two.admin_url.port
    backend.release(one)
    assert client.containers.list(all=True, filters={"id": one.container_id}) == []
    with connect(two.admin_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    backend.release(two)


def test_a_container_without_testdb_labels_is_never_touched(engine: str, client: Any) -> None:
    plain = client.containers.create(IMAGE, command=["true"], labels={"testdb.run-id": "abcdef012345"})
    try:
        plain.start()
        plain.wait(timeout=30)
        info = ServerInfo(kind="docker", url="postgresql://x@127.0.0.1/postgres", container_id=plain.id)
        backend.release(info, force=True)
        assert backend.remove_container(plain.id) is False
        assert plain.id not in orphaned_container_ids()  # exited, but not testdb's
        assert plain.short_id not in {row.id for row in backend.labelled_containers()}
        plain.reload()
        assert plain.status == "exited"
    finally:
        plain.remove(force=True)


# -- failure modes: one line, a hint, nothing left running -------------------------------


def test_unreachable_engine(engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    started = time.monotonic()
    assert backend.engine_answers() is False
    assert time.monotonic() - started < 1.5
    with pytest.raises(DockerError) as exc:
        backend.acquire(docker_settings(tmp_path), new_run_id(), [])
    assert_refused(exc, "cannot reach the Docker engine at unix:///nonexistent.sock: no such socket")
    assert "DOCKER_HOST" in exc.value.hint


def test_image_missing_and_not_pullable(engine: str, client: Any, tmp_path: Path) -> None:
    run_id, notices = new_run_id(), list[str]()
    with pytest.raises(DockerError) as exc:
        backend.acquire(docker_settings(tmp_path, image="testdb-nope:0"), run_id, notices)
    assert_refused(exc, "image testdb-nope:0 is not present and could not be pulled: ")
    assert "docker pull testdb-nope:0" in exc.value.hint and "docker.image" in exc.value.hint
    assert notices == ["pulling testdb-nope:0 (not present on the Docker engine)"]
    assert_nothing_left(client, run_id)


def test_container_exiting_during_start_shows_its_log(
    engine: str, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(backend.TEST_TUNING, "nosuch", "1")  # postgres refuses to start
    run_id = new_run_id()
    with pytest.raises(DockerError) as exc:
        backend.acquire(docker_settings(tmp_path), run_id, [])
    assert_refused(exc, "exited during start")
    assert 'FATAL:  unrecognized configuration parameter "nosuch"' in exc.value.message
    assert_nothing_left(client, run_id)


def test_port_bind_failure(engine: str, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        monkeypatch.setattr(backend, "PUBLISH_PORT", holder.getsockname()[1])
        run_id = new_run_id()
        try:
            info = backend.acquire(docker_settings(tmp_path), run_id, [])
        except DockerError as error:
            exc = pytest.ExceptionInfo.from_exception(error)
        else:
            backend.release(info)
            pytest.skip("this engine publishes ports without binding them on the host (no userland proxy)")
    assert_refused(exc, "cannot publish PostgreSQL's port on 127.0.0.1: ")
    assert "address already in use" in exc.value.message
    assert_nothing_left(client, run_id)


def test_readiness_timeout(engine: str, client: Any, tmp_path: Path) -> None:
    run_id = new_run_id()
    with pytest.raises(DockerError) as exc:
        backend.acquire(docker_settings(tmp_path, start_timeout=0.2), run_id, [])
    assert_refused(exc, "did not accept connections within 0.2s")
    assert "docker.start_timeout" in exc.value.hint
    assert_nothing_left(client, run_id)


# -- prune ------------------------------------------------------------------------------

ACQUIRE_AND_HANG = """
import sys, time
from pathlib import Path
from testdb.config import load_settings
from testdb.servers import docker
settings = load_settings(Path(sys.argv[1]), {"server": "docker", "docker": {"image": sys.argv[2]}})
info = docker.acquire(settings, sys.argv[3], [])
print(info.container_id, flush=True)
time.sleep(600)
"""


def test_orphaned_container_of_a_sigkilled_owner(engine: str, client: Any, tmp_path: Path) -> None:
    run_id = new_run_id()
    proc = subprocess.Popen(
        [sys.executable, "-c", ACQUIRE_AND_HANG, str(tmp_path), IMAGE, run_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        container_id = proc.stdout.readline().strip()
        assert container_id, "the child did not acquire a container"
        assert container_id not in orphaned_container_ids()  # its owner is alive
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

        assert container_id in orphaned_container_ids()
        listed = {row.id: row for row in backend.labelled_containers()}
        assert listed[container_id[:12]].run_id == run_id
        assert listed[container_id[:12]].owner.endswith(f":{proc.pid}")

        assert backend.remove_container(container_id) is True
        assert_nothing_left(client, run_id)
        assert backend.remove_container(container_id) is False
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for container in run_containers(client, run_id):
            container.remove(force=True, v=True)


def test_a_container_never_started_by_a_dead_owner_is_an_orphan(
    engine: str, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed between creating and starting its container leaves it "created"."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    owner = json.dumps({"user": "someone", "host": socket.gethostname(), "pid": dead.pid})
    monkeypatch.setattr(backend, "_owner", lambda: owner)
    run_id = new_run_id()
    sdk = backend._client()
    try:
        created = backend._create(sdk, IMAGE, run_id, "0123456789abcdef", False, 0)
        assert created.status == "created"
        assert created.id in orphaned_container_ids()
        assert backend.remove_container(created.id) is True
        assert_nothing_left(client, run_id)
    finally:
        sdk.close()
        for container in run_containers(client, run_id):
            container.remove(force=True, v=True)


def test_down_of_a_reused_container_keeps_it_says_so_and_drops_its_templates(
    engine: str, client: Any, tmp_path: Path
) -> None:
    settings = docker_settings(tmp_path, reuse=True)
    state = lifecycle.start_detached(
        settings, lifecycle.Request(1, False, root=tmp_path), progress=lifecycle.Progress()
    )
    container_id = state.server.container_id
    try:
        report = lifecycle.down(settings, templates=True)
        assert report is not None
        assert report.server_stopped is False  # the container is kept for the next run
        assert report.templates == [state.template]
        assert client.containers.get(container_id).status == "running"
    finally:
        for container in client.containers.list(all=True, filters={"id": container_id}):
            container.remove(force=True, v=True)
