"""Reclaim what dead runs left behind, and nothing else.

A database is reclaimable when it carries testdb's marker, is not a template (templates
are a cache shared by runs; ``--templates`` includes them), is not protected, and its run
is dead: no liveness lock held and no unexpired lease. A database that still has
connections is skipped and reported unless ``force``. Embedded clusters whose owning
process is gone are stopped and deleted too, and so are labelled Docker containers of dead runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testdb.naming import is_protected
from testdb.provision import DatabaseRow, drop_database, is_alive, list_databases, live_lock_keys
from testdb.servers import embedded
from testdb.servers.base import ServerInfo, admin_connection

if TYPE_CHECKING:
    import psycopg


@dataclass
class PruneReport:
    dropped: list[str] = field(default_factory=list)
    busy: list[DatabaseRow] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    not_owned: list[DatabaseRow] = field(default_factory=list)  # another role's: DROP would be refused


def dead_databases(info: ServerInfo, prefix: str | None = None, templates: bool = False) -> list[DatabaseRow]:
    """Marked databases on ``info`` whose run is dead (optionally only of ``prefix``)."""
    with admin_connection(info) as conn:
        live = live_lock_keys(conn)
        rows = list_databases(conn)
    now = time.time()
    found = []
    for row in rows:
        marker = row.marker
        if marker is None or is_protected(row.name, info.default_database):
            continue
        if marker.role == "template" and not templates:
            continue
        if prefix is not None and marker.prefix != prefix:
            continue
        # A template is a cache, not part of its builder's run: with --templates it goes
        # whatever the builder's lease says (the lease only protects the builder's clones).
        if marker.role == "template" or not is_alive(marker, live, now):
            found.append(row)
    return found


def prune(
    info: ServerInfo,
    *,
    prefix: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    templates: bool = False,
) -> PruneReport:
    """Drop (or with ``dry_run`` only list) every dead run's databases on ``info``."""
    report = PruneReport()
    rows = dead_databases(info, prefix, templates)
    with admin_connection(info) as conn:
        droppable = _droppable(conn)
        for row in rows:
            if row.name not in droppable:
                report.not_owned.append(row)
                continue
            if row.connections and not force:
                report.busy.append(row)
                continue
            if not dry_run:
                drop_database(conn, row.name)
            report.dropped.append(row.name)
    return report


def _droppable(conn: psycopg.Connection[Any]) -> set[str]:
    """Databases the connected role may drop: those it owns, through membership too (a
    superuser owns everything). A LOGIN CREATEDB role on a shared server sees other roles'
    dead runs, and must leave them to their owners rather than fail on them."""
    rows = conn.execute("SELECT datname FROM pg_catalog.pg_database WHERE pg_has_role(datdba, 'USAGE')")
    return {str(name) for (name,) in rows.fetchall()}


def prune_clusters(dry_run: bool = False) -> list[str]:
    """Embedded clusters whose owner process died (e.g. a SIGKILLed ``testdb run``)."""
    found = [str(path) for path in embedded.orphaned_clusters()]
    if not dry_run:
        for path in found:
            embedded.destroy(Path(path))
    return found


def prune_containers(dry_run: bool = False) -> list[str]:
    """testdb's Docker containers that no live run uses (a SIGKILLed run, an expired lease)."""
    from testdb.servers import docker  # lazy: the SDK is slow to import

    if not docker.engine_answers():
        return []
    found = docker.orphaned_containers()
    if not dry_run:
        for container_id in found:
            docker.remove_container(container_id)
    return found
