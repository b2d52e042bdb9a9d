"""Databases kept for inspection after their test failed (role ``failed``, with a lease).

``testdb status`` lists them; ``testdb prune`` drops them once their lease has ended (the
ordinary liveness rule: the run holds no lock and ``marker.expires`` has passed).
"""

from __future__ import annotations

from dataclasses import dataclass

from testdb.envvars import mask_url
from testdb.fresh.names import FAILED_ROLE
from testdb.ownership import list_databases
from testdb.servers.base import ServerInfo, admin_connection


@dataclass(frozen=True)
class KeptDatabase:
    name: str
    url: str  # password masked
    run_id: str
    created: float
    expires: float | None


def kept_databases(info: ServerInfo, prefix: str | None = None) -> list[KeptDatabase]:
    """Failed tests' databases on ``info`` (of ``prefix``, if given), oldest first."""
    with admin_connection(info) as conn:
        rows = list_databases(conn)
    kept = [
        KeptDatabase(
            row.name,
            mask_url(info.database_url(row.name)),
            row.marker.run_id,
            row.marker.created,
            row.marker.expires,
        )
        for row in rows
        if row.marker is not None
        and row.marker.role == FAILED_ROLE
        and (prefix is None or row.marker.prefix == prefix)
    ]
    return sorted(kept, key=lambda db: db.created)
