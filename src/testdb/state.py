"""What a detached run owns, kept in ``.testdb/state.json`` (mode 0600: it holds the server URL)."""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import platformdirs

from testdb.errors import StateError
from testdb.servers.base import ServerInfo

STATE_VERSION = 2
STATE_FILE = "state.json"


@dataclass
class RunState:
    """Everything ``down``, ``env``, ``status`` and ``clean`` need to find a run again."""

    run_id: str
    prefix: str
    server: ServerInfo
    serial: str
    workers: dict[str, str]
    serial_created: bool = True  # False: cloned on first use only (the child was `pytest -n N`)
    template: str | None = None
    created: float = field(default_factory=time.time)
    expires: float | None = None
    redis: dict[str, str] = field(default_factory=dict)  # worker id -> redis URL
    pool: tuple[int, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    owner_pid: int = field(default_factory=os.getpid)
    owner: str = field(default_factory=lambda: f"{getpass.getuser()}@{socket.gethostname()}")

    @property
    def databases(self) -> list[str]:
        serial = [self.serial] if self.serial_created else []
        return [*serial, *self.workers.values()]

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, source: Path) -> RunState:
        try:
            data = json.loads(text)
        except ValueError:
            raise StateError(
                f"state file {source} is corrupt (not JSON)",
                hint=f"delete {source} and run 'testdb prune' to reclaim leftovers",
            ) from None
        if not isinstance(data, dict):
            raise StateError(f"state file {source} is corrupt", hint=f"delete {source}")
        version = data.pop("version", None)
        if version != STATE_VERSION:
            raise StateError(
                f"state file {source} was written by another testdb version ({version})",
                hint=f"delete {source} and run 'testdb prune' with this version",
            )
        try:
            data["server"] = ServerInfo.from_dict(data["server"])
            if data.get("pool") is not None:
                data["pool"] = tuple(data["pool"])
            return cls(**data)
        except (KeyError, TypeError):
            raise StateError(
                f"state file {source} is corrupt (missing fields)",
                hint=f"delete {source} and run 'testdb prune'",
            ) from None


def state_path(state_dir: str | Path) -> Path:
    return usable_state_dir(Path(state_dir)) / STATE_FILE


def usable_state_dir(configured: Path) -> Path:
    """``configured``, or, where it cannot be written (a read-only checkout), a directory of
    its own in the user's cache, named after it (said once on stderr)."""
    directory = configured.absolute()
    if _writable(directory):
        return directory
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    fallback = Path(platformdirs.user_cache_dir("testdb")) / "state" / digest
    _announce_fallback(directory, fallback)
    return fallback


def _writable(directory: Path) -> bool:
    existing = next(p for p in [directory, *directory.parents] if p.exists())
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


@functools.cache  # once per process and directory: every state call resolves the path again
def _announce_fallback(directory: Path, fallback: Path) -> None:
    sys.stderr.write(f"testdb: {directory} is not writable; keeping this run's state in {fallback}\n")


def save_state(state: RunState, state_dir: str | Path) -> Path:
    """Write atomically with mode 0600 (the file is created that way, never widened)."""
    path = state_path(state_dir)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(state.to_json())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(
            f"cannot write the state file {path}: {exc.strerror or exc}",
            hint="set state_dir (TESTDB_STATE_DIR) to a writable directory",
        ) from None
    return path


def load_state(state_dir: str | Path) -> RunState | None:
    """The recorded run, or None if nothing is up."""
    path = state_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read state file {path}: {exc}", hint=f"delete {path}") from None
    return RunState.from_json(text, path)


def remove_state(state_dir: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(state_dir).unlink()


def require_state(state_dir: str | Path) -> RunState:
    state = load_state(state_dir)
    if state is None:
        raise StateError("nothing is up in this directory", hint="run 'testdb up' first")
    return state


def describe_age(created: float) -> str:
    seconds = int(time.time() - created)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
