"""Two runs at once: each gets PostgreSQL databases of its own, but Redis numbers are shared.

A second ``testdb run`` beside a first one (``make demo`` twice, in one directory or two)
gets databases of its own (its own embedded cluster, or names the first does not hold), so
it works. Redis is the exception: both runs map their workers onto the same database
numbers (``redis.first_db + N`` and the serial one), and one run's ``FLUSHDB`` would empty
the other's keys mid-test. So a run holds an ``flock`` per Redis database number it uses,
for its whole life: a second run that needs one of them is refused in one line, before
anything is created, with no window between the two starts; a run that dies releases them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import platformdirs

from testdb.errors import TestdbError

if TYPE_CHECKING:
    from testdb.config import Settings


@contextlib.contextmanager
def redis_claim(settings: Settings, workers: int, serial: bool) -> Iterator[None]:
    """Hold this run's Redis database numbers for the block (nothing without ``redis.url``).

    ``serial``: whether the run has a serial database (not for ``pytest -n N``, whose
    controller runs no test), and so uses the serial Redis database too.
    """
    if not settings.redis.url:
        yield
        return
    server = _server(settings.redis.url)
    with contextlib.ExitStack() as held:
        for number in sorted(_numbers(settings, workers, serial)):
            held.enter_context(_claim(server, number))
        yield


def _server(url: str) -> str:
    parts = urlsplit(url)  # host and port only: a password never reaches a file name or a message
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def _numbers(settings: Settings, workers: int, serial: bool) -> set[int]:
    from testdb.redisdb import server_databases

    assert settings.redis.url is not None
    numbers = set(range(settings.redis.first_db, settings.redis.first_db + workers))
    if not serial:
        return numbers
    if settings.redis.serial_db is not None:
        return numbers | {settings.redis.serial_db}
    return numbers | {server_databases(settings.redis.url) - 1}  # redisdb's default: the last one


@contextlib.contextmanager
def _claim(server: str, number: int) -> Iterator[None]:
    digest = hashlib.sha256(server.encode()).hexdigest()[:12]
    path = Path(platformdirs.user_cache_dir("testdb")) / "redis" / f"{digest}-{number}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(server, number, handle) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _in_use(server: str, number: int, handle: IO[str]) -> TestdbError:
    handle.seek(0)
    holder = handle.read().strip() or "?"
    return TestdbError(
        f"Redis database {number} on {server} is in use by another testdb run (pid {holder}):"
        " a second run would empty it under the first",
        hint="wait for that run to finish, or give this run other Redis databases"
        " (TESTDB_REDIS__FIRST_DB, TESTDB_REDIS__SERIAL_DB)",
    )
