"""Faults on a real embedded server: killed or restarted under a run; nothing leaks."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

TESTDB = Path(sys.executable).parent / "testdb"
KILL_SERVER = (
    "import json, os, signal; "
    "s = json.load(open('.testdb/state.json')); os.kill(s['server']['pid'], signal.SIGKILL)"
)


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESTDB_")}
    return subprocess.run(
        [str(TESTDB), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False, env=env
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _assert_one_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("testdb: error:")]
    assert len(lines) == 1, stderr
    assert any(line.startswith("hint:") for line in stderr.splitlines())


@pytest.fixture(autouse=True)
def _drop_leftovers() -> None:
    """These tests bring their own embedded servers; nothing to sweep on the shared ones."""


@pytest.fixture
def prefix() -> str:
    return f"ft_{secrets.token_hex(3)}"


def test_embedded_server_killed_mid_run_is_one_error_and_nothing_is_left(tmp_path: Path, prefix: str) -> None:
    result = _cli(
        tmp_path,
        "run",
        "--server",
        "embedded",
        "--prefix",
        prefix,
        "-n",
        "1",
        "--",
        sys.executable,
        "-c",
        KILL_SERVER,
    )
    assert result.returncode == 2
    _assert_one_error(result.stderr)
    assert "embedded server stopped during the run" in result.stderr
    assert not (tmp_path / ".testdb" / "state.json").exists()


def test_down_cleans_up_after_the_embedded_server_was_killed(tmp_path: Path, prefix: str) -> None:
    assert _cli(tmp_path, "up", "--server", "embedded", "--prefix", prefix, "-n", "1").returncode == 0
    state = json.loads((tmp_path / ".testdb" / "state.json").read_text())
    os.kill(state["server"]["pid"], signal.SIGKILL)
    assert _wait_gone(state["server"]["pid"])
    status = _cli(tmp_path, "status")
    assert status.returncode == 2
    _assert_one_error(status.stderr)
    down = _cli(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not Path(state["server"]["data_dir"]).exists()
    assert not (tmp_path / ".testdb" / "state.json").exists()


def test_server_restarted_under_a_detached_run_keeps_working(tmp_path: Path, prefix: str) -> None:
    assert _cli(tmp_path, "up", "--server", "embedded", "--prefix", prefix, "-n", "1").returncode == 0
    state = json.loads((tmp_path / ".testdb" / "state.json").read_text())
    server, root = state["server"], Path(state["server"]["data_dir"])
    os.kill(server["pid"], signal.SIGINT)  # fast shutdown, as a restart would
    assert _wait_gone(server["pid"])
    port = make_url(server["url"]).port
    during = _cli(tmp_path, "env")
    assert during.returncode == 2
    _assert_one_error(during.stderr)
    status = _cli(tmp_path, "status")
    assert status.returncode == 2
    _assert_one_error(status.stderr)
    assert port is not None
    restarted = _restart(root, port)
    try:
        assert _cli(tmp_path, "status").returncode == 0
        down = _cli(tmp_path, "down")
        assert down.returncode == 0, down.stderr
        assert "dropped 2 databases" in down.stderr
    finally:
        restarted.send_signal(signal.SIGINT)
        restarted.wait(10)


def _restart(root: Path, port: int) -> subprocess.Popen[bytes]:
    import pwd

    record = json.loads((root / "cluster.json").read_text())
    user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    proc = subprocess.Popen(
        [
            str(Path(record["bin_dir"]) / "postgres"),
            "-D",
            str(root / "data"),
            "-p",
            str(port),
            "-k",
            str(root / "sock"),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
    )
    import psycopg

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                password=record.get("password"),
                dbname="postgres",
            ).close()
            record["pid"] = proc.pid
            (root / "cluster.json").write_text(json.dumps(record))
            return proc
        except psycopg.OperationalError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("restarted server did not come back")
