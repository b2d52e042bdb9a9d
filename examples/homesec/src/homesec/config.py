"""Settings read from the environment, cached until ``get_settings.cache_clear()``.

testdb's ``testdb_env`` fixture sets the variables below for the current pytest-xdist
worker and calls ``get_settings.cache_clear`` (configured in pyproject.toml), so code that
calls ``get_settings()`` during a test sees that worker's database and Redis.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/homesec"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_SYNC_DRIVER = "postgresql+psycopg"
_ASYNC_DRIVER = "postgresql+asyncpg"
_PLAIN_SCHEMES = ("postgresql", "postgres", _SYNC_DRIVER, _ASYNC_DRIVER, "postgresql+psycopg2")


def _with_driver(url: str, driver: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _PLAIN_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return f"{driver}://{rest}"


def sync_url(url: str) -> str:
    """``url`` with the psycopg 3 driver (accepts postgres://, postgresql://, ...+asyncpg://)."""
    return _with_driver(url, _SYNC_DRIVER)


def async_url(url: str) -> str:
    """``url`` with the asyncpg driver."""
    return _with_driver(url, _ASYNC_DRIVER)


@dataclass(frozen=True)
class Settings:
    database_url: str
    database_url_async: str
    redis_url: str
    database_pool_size: int = 5
    database_pool_overflow: int = 2
    recent_events_limit: int = 20
    recent_events_ttl: int = 300


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ
    database_url = sync_url(env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    pool_size = int(env.get("DATABASE_POOL_SIZE", "5"))
    if pool_size < 1:
        raise ValueError(f"DATABASE_POOL_SIZE must be at least 1, got {pool_size}")
    return Settings(
        database_url=database_url,
        database_url_async=async_url(env.get("DATABASE_URL_ASYNC", database_url)),
        redis_url=env.get("REDIS_URL", DEFAULT_REDIS_URL),
        database_pool_size=pool_size,
        database_pool_overflow=int(env.get("DATABASE_POOL_OVERFLOW", "2")),
        recent_events_limit=int(env.get("RECENT_EVENTS_LIMIT", "20")),
        recent_events_ttl=int(env.get("RECENT_EVENTS_TTL", "300")),
    )
