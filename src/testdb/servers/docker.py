"""Docker backend (placeholder until the Docker issue lands)."""

from __future__ import annotations

from testdb.config import Settings
from testdb.errors import DockerError
from testdb.servers.base import ServerInfo

KIND = "docker"


def engine_answers() -> bool:
    return False


def acquire(settings: Settings, run_id: str, notices: list[str]) -> ServerInfo:
    raise DockerError("the Docker backend is not available in this version")


def release(info: ServerInfo, *, force: bool = False) -> None:
    return None
