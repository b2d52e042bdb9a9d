"""`testdb up/down/run --server docker` as a user runs them, against a real Docker engine.

The engine and the offline image ``testdb-postgres:15`` come from
``scripts/docker-test-engine.sh``; when it cannot give us one, these tests are skipped with
the script's last lines as the reason.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testdb.prune import orphaned_servers
from testdb.servers import docker as backend

from ._cli import finish, run, start, wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / "scripts" / "docker-test-engine.sh"
IMAGE = "testdb-postgres:15"


def orphan_ids() -> list[str]:
    """Containers the janitor would remove (its one orphan policy over the backend's facts)."""
    return [r.ident for r in orphaned_servers() if r.kind == "docker"]


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """DOCKER_HOST of a real engine (set in os.environ for this module), or skip with why not."""
    try:
        done = subprocess.run(
            [str(ENGINE_SCRIPT)], capture_output=True, text=True, timeout=15 * 60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Docker engine: {ENGINE_SCRIPT.name} failed: {exc}")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("DOCKER_HOST="):
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        pytest.skip(f"no Docker engine: {ENGINE_SCRIPT.name} exited {done.returncode}: {tail}")
    host = lines[-1].split("=", 1)[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", host)
        yield host


@pytest.fixture(scope="module")
def client(engine: str) -> Iterator[Any]:
    import docker

    sdk = docker.DockerClient(base_url=engine)
    yield sdk
    sdk.close()


@pytest.fixture
def docker_env(engine: str) -> dict[str, str | None]:
    return {"DOCKER_HOST": engine, "TESTDB_DOCKER__IMAGE": IMAGE}


@pytest.fixture
def prefix() -> str:
    return f"dke_{secrets.token_hex(3)}"


def run_containers(client: Any, run_id: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"{backend.LABEL_RUN}={run_id}"}))


def volumes_and_networks(client: Any) -> tuple[set[str], set[str]]:
    """What is on the engine now (containers are told apart by their run id instead, since
    other tests may start theirs on the same engine meanwhile)."""
    return {v.name for v in client.volumes.list()}, {n.id for n in client.networks.list()}


def sleepers(marker: str) -> list[int]:
    """Pids of the ``sleep MARKER`` processes (not of testdb, whose command line also names it)."""
    wanted = f"sleep\0{marker}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def remove_run(client: Any, run_id: str) -> None:
    for container in run_containers(client, run_id):
        container.remove(force=True, v=True)


def test_up_then_down_leaves_no_container_volume_or_network(
    client: Any, tmp_path: Path, docker_env: dict[str, str | None], prefix: str
) -> None:
    before = volumes_and_networks(client)
    up = run(
        ["up", "-n", "4", "--server", "docker", "--prefix", prefix, "--format", "json"], tmp_path, docker_env
    )
    env = json.loads(up.out) if up.code == 0 else {}
    run_id = env.get("TESTDB_RUN_ID", "")
    try:
        assert up.code == 0, up.err
        assert f"from {IMAGE} on 127.0.0.1:" in up.err
        [container] = run_containers(client, run_id)
        assert container.status == "running"
        for worker in range(4):
            with psycopg.connect(env[f"TESTDB_WORKER_URL_GW{worker}"]) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == (f"{prefix}_gw{worker}",)

        down = run(["down"], tmp_path, docker_env)
        assert down.code == 0, down.err
        assert "stopped the server" in down.err
        assert run_containers(client, run_id) == []
        volumes, networks = volumes_and_networks(client)
        assert (volumes - before[0], networks - before[1]) == (set(), set())
    finally:
        remove_run(client, run_id)


def test_run_passes_the_exit_code_through_and_leaves_no_container(
    client: Any, tmp_path: Path, docker_env: dict[str, str | None], prefix: str
) -> None:
    before = volumes_and_networks(client)
    command = ["sh", "-c", 'echo "run=$TESTDB_RUN_ID"; exit 3']
    result = run(
        ["run", "--server", "docker", "-n", "2", "--prefix", prefix, "--", *command], tmp_path, docker_env
    )
    run_id = next((line[4:] for line in result.out.splitlines() if line.startswith("run=")), "")
    try:
        assert result.code == 3, result.err
        assert run_id, result.out
        assert run_containers(client, run_id) == []
        volumes, networks = volumes_and_networks(client)
        assert (volumes - before[0], networks - before[1]) == (set(), set())
    finally:
        remove_run(client, run_id)


def test_a_sigkilled_run_leaves_a_labelled_container_that_status_down_and_prune_see(
    client: Any, tmp_path: Path, docker_env: dict[str, str | None], prefix: str
) -> None:
    marker = f"{60 + secrets.randbelow(1000) / 1000:.3f}"  # a `sleep` argument no one else uses
    proc = start(
        ["run", "--server", "docker", "-n", "1", "--prefix", prefix, "--", "sleep", marker],
        tmp_path,
        docker_env,
    )
    run_id = ""
    try:

        def owned() -> list[backend.ContainerRow]:
            return [row for row in backend.labelled_containers() if row.owner.endswith(f":{proc.pid}")]

        wait_for(lambda: bool(owned()) and bool(sleepers(marker)), 60, "the run's child")
        [row] = owned()
        run_id = row.run_id
        assert row.status == "running" and row.ports.startswith("127.0.0.1:")
        container_id = run_containers(client, run_id)[0].id
        assert container_id not in orphan_ids()  # its run is alive

        proc.send_signal(signal.SIGKILL)
        for pid in sleepers(marker):  # it holds the pipes open that finish() reads to the end
            os.kill(pid, signal.SIGKILL)
        assert finish(proc).code == -signal.SIGKILL

        # The container outlives its run, labelled: prune can tell it is an orphan ...
        wait_for(
            lambda: container_id in orphan_ids(),
            10,
            "the container to be an orphan",
        )
        # ... and the state file the run left lets status show it and down remove it.
        status = run(["status"], tmp_path, docker_env)
        assert status.code == 0, status.err
        assert f"container {container_id[:12]} from {IMAGE}" in status.err
        down = run(["down"], tmp_path, docker_env)
        assert down.code == 0, down.err
        assert run_containers(client, run_id) == []
        assert backend.remove_container(container_id) is False  # gone already
    finally:
        for pid in sleepers(marker):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            finish(proc)
        for container in client.containers.list(all=True, filters={"label": backend.LABEL_OWNER}):
            if json.loads(container.labels[backend.LABEL_OWNER]).get("pid") == proc.pid:
                container.remove(force=True, v=True)  # a failure before run_id was known
        remove_run(client, run_id)
