"""Per-worker Redis database numbers.

Mapping (the seed's, generalised): worker ``gwN`` gets database ``first_db + N``
(``first_db`` defaults to 0, the seed's mapping); the serial run gets the server's last
database (``databases - 1``, 15 on a default server) unless ``redis.serial_db`` says
otherwise. Set ``redis.first_db`` to keep tests off databases your machine uses for
something else: the fixtures FLUSHDB the worker's database.
Asking for more workers than the server has databases
(keeping one for the serial run) is an error before anything is created.
"""

from __future__ import annotations

import contextlib

from testdb.errors import ConfigError
from testdb.naming import SERIAL_WORKER, worker_index
from testdb.urls import make_url

DEFAULT_DATABASES = 16


def server_databases(url: str) -> int:
    """The server's ``databases`` setting, or the default when it cannot be asked."""
    with contextlib.suppress(Exception):
        import redis  # optional: testdb works without it, trusting the default

        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            value = client.config_get("databases").get("databases")
            return int(value) if value else DEFAULT_DATABASES
        finally:
            client.close()
    return DEFAULT_DATABASES


def redis_db_number(worker_id: str, databases: int, serial_db: int | None, first_db: int = 0) -> int:
    index = worker_index(worker_id)
    if index is None:
        return databases - 1 if serial_db is None else serial_db
    return first_db + index


def redis_urls(
    url: str, worker_ids: list[str], serial_db: int | None, databases: int | None = None, first_db: int = 0
) -> dict[str, str]:
    """worker id (and 'master') -> Redis URL with that worker's database number."""
    count = databases or server_databases(url)
    serial = redis_db_number(SERIAL_WORKER, count, serial_db)
    numbers = range(first_db, first_db + len(worker_ids))
    if first_db + len(worker_ids) > count or (serial_db is None and first_db + len(worker_ids) > count - 1):
        raise ConfigError(
            f"{len(worker_ids)} workers (from Redis database {first_db}) and the serial run need"
            f" databases up to {first_db + len(worker_ids)}, the server has {count}",
            hint="use fewer workers, lower redis.first_db, or raise 'databases' in redis.conf",
        )
    if serial in numbers:
        raise ConfigError(
            f"redis.serial_db = {serial} is also worker gw{serial - first_db}'s database",
            hint=f"set redis.serial_db outside {first_db}..{numbers[-1]}, or leave it unset",
        )
    base = make_url(url)
    return {
        w: base.set(database=str(redis_db_number(w, count, serial_db, first_db))).render_as_string(False)
        for w in [SERIAL_WORKER, *worker_ids]
    }
