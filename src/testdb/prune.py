"""The janitor: reclaim what dead runs left behind, and nothing else.

A database is reclaimable when it carries testdb's marker, is not a template (templates
are a cache shared by runs; ``templates=True`` includes them), is not protected, and its
run is dead (:meth:`testdb.ownership.Liveness.alive`); a database that still has
connections is skipped and reported unless ``force``. Servers testdb started (embedded
clusters, containers) are reported by their backends as facts and judged here by the one
policy, :func:`testdb.ownership.orphaned`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from testdb.errors import ServerError
from testdb.naming import is_protected
from testdb.ownership import DatabaseRow, Liveness, Resource, list_databases, orphaned
from testdb.provision import drop_database
from testdb.servers import backend, find_server
from testdb.servers.base import SERVER_KINDS, ServerInfo, ServerKind, admin_connection, connect
from testdb.urls import make_url

if TYPE_CHECKING:
    import psycopg

    from testdb.config import Settings

if TYPE_CHECKING:
    import psycopg


@dataclass
class PruneReport:
    dropped: list[str] = field(default_factory=list)
    busy: list[DatabaseRow] = field(default_factory=list)
    not_owned: list[DatabaseRow] = field(default_factory=list)  # another role's: DROP would be refused
    servers: list[Resource] = field(default_factory=list)  # embedded clusters, containers
    server: ServerInfo | None = None  # where databases were looked for (None: no server)


def dead_databases(info: ServerInfo, prefix: str | None = None, templates: bool = False) -> list[DatabaseRow]:
    """Marked databases on ``info`` whose run is dead (optionally only of ``prefix``)."""
    with admin_connection(info) as conn:
        liveness = Liveness.read(conn)
        rows = list_databases(conn)
    return [row for row in rows if _reclaimable(row, info, prefix, templates, liveness)]


def _reclaimable(
    row: DatabaseRow, info: ServerInfo, prefix: str | None, templates: bool, liveness: Liveness
) -> bool:
    marker = row.marker
    if marker is None or is_protected(row.name, info.default_database):
        return False
    if prefix is not None and marker.prefix != prefix:
        return False
    if marker.role == "template":
        # A template is a cache, not part of its builder's run: with --templates it goes
        # whatever the builder's lease says (the lease only protects the builder's clones).
        return templates
    return not liveness.alive(marker)


def prune_databases(
    info: ServerInfo,
    *,
    prefix: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    templates: bool = False,
) -> PruneReport:
    """Drop (or with ``dry_run`` only list) every dead run's databases on ``info``."""
    report = PruneReport(server=info)
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
            if not dry_run and not _drop(conn, row):
                report.busy.append(row)  # a template a live run is cloning from right now
                continue
            report.dropped.append(row.name)
    return report


def _drop(conn: psycopg.Connection[Any], row: DatabaseRow) -> bool:
    if row.marker is not None and row.marker.role == "template":
        from testdb.template import drop_unused

        return drop_unused(conn, row)
    drop_database(conn, row.name)
    return True


def _droppable(conn: psycopg.Connection[Any]) -> set[str]:
    """Databases the connected role may drop: those it owns, through membership too (a
    superuser owns everything). A LOGIN CREATEDB role on a shared server sees other roles'
    dead runs, and must leave them to their owners rather than fail on them."""
    rows = conn.execute("SELECT datname FROM pg_catalog.pg_database WHERE pg_has_role(datdba, 'USAGE')")
    return {str(name) for (name,) in rows.fetchall()}


def orphaned_servers() -> list[Resource]:
    """Clusters and containers testdb started that no live run uses any more."""
    now = time.time()
    found = []
    for kind in SERVER_KINDS:  # url and local report none: testdb never starts those
        found += [r for r in backend(kind).resources() if orphaned(r, _live_run_on, now)]
    return found


def _live_run_on(resource: Resource) -> bool | None:
    """Whether a live run (lock or lease) has databases on the resource's server; None: unknown."""
    import psycopg

    if resource.url is None:
        return None
    with contextlib.suppress(psycopg.Error, ServerError), connect(make_url(resource.url), timeout=2) as conn:
        liveness = Liveness.read(conn)
        return any(row.marker is not None and liveness.alive(row.marker) for row in list_databases(conn))
    return None


def prune_servers(dry_run: bool = False) -> list[Resource]:
    """Stop and delete orphaned clusters and containers (``dry_run``: only list them)."""
    found = orphaned_servers()
    if not dry_run:
        for resource in found:
            backend(cast("ServerKind", resource.kind)).remove(resource)
    return found


def prune_everything(
    settings: Settings,
    server: ServerInfo | None,
    prefix: str | None,
    dry_run: bool,
    force: bool,
    templates: bool,
) -> PruneReport:
    """Orphaned servers on this machine first, then dead runs' databases on ``server``
    (or the server the settings name, if it is running)."""
    servers = prune_servers(dry_run)
    info = server or find_server(settings)
    if info is None:
        return PruneReport(servers=servers)
    report = prune_databases(info, prefix=prefix, dry_run=dry_run, force=force, templates=templates)
    report.servers = servers
    return report
