"""Runners on separate hosts, for real: Linux network namespaces around one server.

The lab (built and torn down by the ``lab`` fixture, all on this machine):

    namespace S: PostgreSQL 15+ listening on 10.R.1.1 and 10.R.2.1 (scram, no trust)
    namespace A: 10.R.1.2 --veth-- S      hostname runner-a (its own UTS namespace)
    namespace B: 10.R.2.2 --veth-- S      hostname runner-b

A ``testdb run`` in A is SIGKILLed with its whole process group (a CI runner that
vanished); from B, ``testdb prune`` must reclaim its databases from the server's locks
alone, while a live run in B and a database testdb did not create stay untouched. The
pid of A's runner means nothing in B: same pid space, different "host".

Needs root (namespaces, veth, running the server as ``postgres``) and server binaries;
skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from testdb.ownership import LOCK_NAMESPACE, list_databases, lock_key

TESTDB = Path(sys.executable).parent / "testdb"
ROLE, PASSWORD = "fleet_runner", secrets.token_urlsafe(16)
TIMEOUT_S = 120


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth pairs and a server run as 'postgres'"
    if shutil.which("ip") is None or shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return "needs iproute2 (ip) and util-linux (unshare, setpriv)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' account to run the server as"
    if _bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, postgres)"
    return None


def _bin_dir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "postgres").is_file()), None)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60)


@dataclass
class Lab:
    """The namespaces and the server; ``url(ns)`` is how namespace ``ns`` reaches it."""

    server_ns: str
    runner_ns: dict[str, str]  # "a"/"b" -> namespace name
    addresses: dict[str, str]  # "a"/"b" -> the server's address on that link
    socket_dir: Path
    work: Path

    def url(self, runner: str) -> str:
        return f"postgresql://{ROLE}:{PASSWORD}@{self.addresses[runner]}:5432/postgres"

    def admin(self) -> psycopg.Connection[Any]:
        """Superuser over the server's unix socket (the filesystem is shared by namespaces)."""
        return psycopg.connect(host=str(self.socket_dir), port=5432, user="postgres", autocommit=True)

    def testdb(self, runner: str, *args: str) -> list[str]:
        """argv running ``testdb ARGS`` in ``runner``'s namespace under its own hostname."""
        script = 'hostname "$0" && exec "$@"'
        ns = self.runner_ns[runner]
        namespace = ["ip", "netns", "exec", ns, "unshare", "--uts"]
        return [*namespace, "sh", "-c", script, f"runner-{runner}", str(TESTDB), *args]


def _child_env() -> dict[str, str]:
    drop = ("DATABASE_URL", "TEST_DATABASE_URL", "DATABASE_URL_ASYNC", "COLUMNS")
    return {k: v for k, v in os.environ.items() if not k.startswith("TESTDB_") and k not in drop}


def _link(lab_id: str, runner: str, octet: int, server_ns: str, runner_ns: str) -> str:
    """A veth pair between S and a runner namespace on 10.R.octet.0/30; the server's address."""
    net = f"10.{lab_id}.{octet}"
    s_end, r_end = f"tdb{lab_id}{runner}s", f"tdb{lab_id}{runner}r"
    sh("ip", "link", "add", s_end, "type", "veth", "peer", "name", r_end)
    sh("ip", "link", "set", s_end, "netns", server_ns)
    sh("ip", "link", "set", r_end, "netns", runner_ns)
    for ns, end, host in ((server_ns, s_end, 1), (runner_ns, r_end, 2)):
        sh("ip", "-n", ns, "addr", "add", f"{net}.{host}/30", "dev", end)
        sh("ip", "-n", ns, "link", "set", end, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    return f"{net}.1"


def _start_server(lab: Lab, bin_dir: Path) -> subprocess.Popen[bytes]:
    pg = pwd.getpwnam("postgres")
    as_pg = ["setpriv", f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}", "--init-groups"]
    data = lab.work / "data"
    (lab.work / "pw").write_text("server-admin-secret\n")
    for path in (lab.work, lab.work / "pw", lab.socket_dir):
        os.chown(path, pg.pw_uid, pg.pw_gid)
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={lab.work / 'pw'}"]
    sh(*as_pg, *initdb, "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8")
    with (data / "pg_hba.conf").open("a") as hba:  # the runners' links: password only
        hba.write(f"host all all 10.{lab.addresses['a'].split('.')[1]}.0.0/16 scram-sha-256\n")
    listen = ",".join(lab.addresses.values())
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(data),
        "-k",
        str(lab.socket_dir),
        "-c",
        f"listen_addresses={listen}",
    ]
    argv += ["-c", "fsync=off", "-c", "max_connections=60"]
    log = (lab.work / "postgres.log").open("wb")
    return subprocess.Popen(["ip", "netns", "exec", lab.server_ns, *as_pg, *argv], stdout=log, stderr=log)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _accepts(lab: Lab) -> bool:
    try:
        lab.admin().close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    bin_dir = _bin_dir()
    assert bin_dir is not None
    lab_id = str(secrets.choice(range(100, 250)))
    names = {"s": f"tdb{lab_id}s", "a": f"tdb{lab_id}a", "b": f"tdb{lab_id}b"}
    work = Path(tempfile.mkdtemp(prefix="testdb-netns-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
        addresses = {r: _link(lab_id, r, i, names["s"], names[r]) for i, r in ((1, "a"), (2, "b"))}
        (work / "sock").mkdir()
        lab = Lab(names["s"], {"a": names["a"], "b": names["b"]}, addresses, work / "sock", work)
        server = _start_server(lab, bin_dir)
        _wait(lambda: server.poll() is None and _accepts(lab), "the lab server")
        with lab.admin() as conn:  # a CI role: no superuser, a connection cap
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB CONNECTION LIMIT 24 PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
        yield lab
    finally:
        if server is not None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=20)
            if server.poll() is None:
                server.kill()
                server.wait()
        for ns in names.values():
            sh("ip", "netns", "del", ns, check=False)  # takes its veth ends with it
        shutil.rmtree(work, ignore_errors=True)


def _databases_of(lab: Lab, host: str) -> dict[str, str]:
    """name -> run id of the databases a run on ``host`` made for itself (templates are a cache)."""
    with lab.admin() as conn:
        rows = list_databases(conn)
    return {
        r.name: r.marker.run_id
        for r in rows
        if r.marker is not None and r.marker.host == host and r.marker.role != "template"
    }


def _holds_lock(lab: Lab, run_id: str) -> bool:
    with lab.admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
            " AND classid::bigint = %s AND objid::bigint = %s",
            (LOCK_NAMESPACE, lock_key(run_id) % 2**32),
        ).fetchone()
    return row is not None and row[0] > 0


def _start_run(lab: Lab, runner: str, cwd: Path, seconds: int) -> subprocess.Popen[str]:
    cwd.mkdir(exist_ok=True)
    argv = lab.testdb(runner, "run", "--url", lab.url(runner), "--prefix", "lab", "--unique", "-n", "2")
    return subprocess.Popen(
        [*argv, "--", "sleep", str(seconds)],
        cwd=cwd,
        env=_child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: SIGKILL takes the runner and its child
    )


@pytest.fixture
def unmarked(lab: Lab) -> Iterator[str]:
    name = f"lab_unmarked_{secrets.token_hex(3)}"
    with lab.admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with lab.admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_run_from_another_host_reclaims_a_killed_runners_databases_and_nothing_else(
    lab: Lab, unmarked: str
) -> None:
    live = _start_run(lab, "b", lab.work / "b-live", 120)
    victim = _start_run(lab, "a", lab.work / "a-victim", 300)
    try:
        _wait(lambda: len(_databases_of(lab, "runner-a")) == 3, "runner-a's databases", TIMEOUT_S)
        _wait(lambda: len(_databases_of(lab, "runner-b")) == 3, "runner-b's databases", TIMEOUT_S)
        victim_dbs, live_dbs = _databases_of(lab, "runner-a"), _databases_of(lab, "runner-b")
        os.killpg(victim.pid, signal.SIGKILL)  # the runner vanished: no teardown at all
        victim.wait(timeout=30)
        victim_run = next(iter(victim_dbs.values()))
        _wait(lambda: not _holds_lock(lab, victim_run), "the killed runner's session to end")

        pruned = subprocess.run(
            lab.testdb("b", "prune", "--url", lab.url("b")),
            cwd=lab.work,
            env=_child_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert pruned.returncode == 0, pruned.stderr
        assert set(pruned.stdout.split()) == set(victim_dbs), pruned
        remaining = _databases_of(lab, "runner-b")
        assert not set(_databases_of(lab, "runner-a")), "the killed run's databases are gone"
        assert set(live_dbs) <= set(remaining), "the live run is untouched"
        with lab.admin() as conn:
            assert unmarked in {row.name for row in list_databases(conn)}
        assert live.poll() is None, "the live run is still running"
    finally:
        for proc in (live, victim):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        for proc in (live, victim):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)


def test_the_fleet_view_from_another_host_names_each_runner(lab: Lab) -> None:
    live = _start_run(lab, "a", lab.work / "a-fleet", 120)
    try:
        _wait(lambda: len(_databases_of(lab, "runner-a")) == 3, "runner-a's databases", TIMEOUT_S)
        shown = subprocess.run(
            lab.testdb("b", "status", "--all", "--url", lab.url("b")),
            cwd=lab.work,
            env={**_child_env(), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        line = next(line for line in shown.stdout.splitlines() if "runner-a" in line)
        assert "lock" in line
        assert PASSWORD not in shown.stdout + shown.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(live.pid, signal.SIGINT)
        live.wait(timeout=60)
