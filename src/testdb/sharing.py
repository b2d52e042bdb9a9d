"""A second ``testdb run`` in a directory where a run is still going.

Each run gets databases of its own (an embedded cluster of its own, or names the first
run does not hold), so a second run works beside the first; ``make demo`` twice is fine.
Redis is the exception: both runs would map their workers onto the same Redis database
numbers, and one run's ``FLUSHDB`` would empty the other's keys mid-test. That case is
refused before anything is created.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from testdb.errors import TestdbError
from testdb.naming import SERIAL_WORKER

if TYPE_CHECKING:
    from testdb.config import Settings
    from testdb.state import RunState


def refuse_shared_redis(existing: RunState | None, settings: Settings, workers: int) -> None:
    """Raise if ``existing`` is alive and uses Redis databases this run would use too."""
    if existing is None or not settings.redis.url or not existing.redis:
        return
    if _server(settings.redis.url) != _server(next(iter(existing.redis.values()))):
        return
    shared = _numbers(settings, workers, existing) & {_number(url) for url in existing.redis.values()}
    if not shared or not _alive(existing):
        return
    raise TestdbError(
        f"run {existing.run_id} (pid {existing.owner_pid}) is still running in this directory and uses"
        f" Redis databases {', '.join(map(str, sorted(shared)))}: a second run would empty them under it",
        hint="wait for it to finish, or give this run other Redis databases (TESTDB_REDIS__FIRST_DB)",
    )


def _server(url: str) -> str:
    return url.rsplit("/", 1)[0]  # redis://host:port/N: everything but the database number


def _number(url: str) -> int:
    tail = url.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _numbers(settings: Settings, workers: int, existing: RunState) -> set[int]:
    first = settings.redis.first_db
    serial = settings.redis.serial_db
    if serial is None:  # the server's last database: the same one the first run uses
        serial = _number(existing.redis[SERIAL_WORKER]) if SERIAL_WORKER in existing.redis else None
    return set(range(first, first + workers)) | ({serial} if serial is not None else set())


def _alive(state: RunState) -> bool:
    """A running ``testdb run`` (its process or lock), or a detached run within its lease."""
    from testdb import lifecycle

    return lifecycle.bound_run_alive(state) if state.expires is None else time.time() < state.expires
