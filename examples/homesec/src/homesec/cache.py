"""Redis cache of each camera's most recent events (newest first).

A camera's list is filled from the database on a read miss, then kept warm by pushing new
events onto it (LPUSHX: a cold list stays cold, so a partial list is never served). Lists
are capped at ``limit`` entries and expire ``ttl`` seconds after the last write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

_clients: dict[str, redis.Redis] = {}


def get_redis(url: str) -> redis.Redis:
    """One client (and connection pool) per Redis URL."""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


def close_clients() -> None:
    while _clients:
        _, client = _clients.popitem()
        client.close()


class RecentEventsCache:
    def __init__(
        self, client: redis.Redis, limit: int = 20, ttl: int = 300, namespace: str = "homesec"
    ) -> None:
        if limit < 1 or ttl < 1:
            raise ValueError("limit and ttl must be positive")
        self.client = client
        self.limit = limit
        self.ttl = ttl
        self.namespace = namespace

    def key(self, camera_id: str) -> str:
        return f"{self.namespace}:camera:{camera_id}:recent_events"

    def get(self, camera_id: str) -> list[dict[str, Any]] | None:
        """The cached events, or None when the camera's list is cold."""
        raw = self.client.lrange(self.key(camera_id), 0, self.limit - 1)
        if not raw:
            return None
        return [json.loads(item) for item in raw]

    def fill(self, camera_id: str, events: Sequence[Mapping[str, Any]]) -> None:
        """Replace the camera's list with ``events`` (newest first, as read from the DB)."""
        key = self.key(camera_id)
        pipe = self.client.pipeline()
        pipe.delete(key)
        if events:
            pipe.rpush(key, *(json.dumps(e, default=str) for e in events[: self.limit]))
            pipe.expire(key, self.ttl)
        pipe.execute()

    def push(self, camera_id: str, event: Mapping[str, Any]) -> bool:
        """Prepend a new event if the list is warm; returns whether it was cached."""
        key = self.key(camera_id)
        pipe = self.client.pipeline()
        pipe.lpushx(key, json.dumps(event, default=str))
        pipe.ltrim(key, 0, self.limit - 1)
        pipe.expire(key, self.ttl)
        length, *_ = pipe.execute()
        return bool(length)

    def invalidate(self, camera_id: str) -> None:
        self.client.delete(self.key(camera_id))
