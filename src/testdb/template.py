"""Build the schema once into a template database, keyed by a hash of its inputs.

The template's name is ``<prefix>_tpl_<hash>``, where the hash covers every schema source
file, the command and callable strings, the extra ``inputs`` files and the server's major
version; with a migration tool (``schema.alembic`` / ``schema.django``, see
``testdb.migrations``) it covers the revision chain instead of the migration files. A
matching template (marked as testdb's) is reused; a miss builds one under an advisory
lock, so concurrent runs build it once. A chain that extends a cached template's chain
clones that template and applies only the new revisions.

Cached templates are kept per prefix, most recently used first (``schema.keep_templates``).
A template is never dropped while a run holds it (``TemplateHold``: a shared advisory lock
while it clones) or while a live run's databases name it in their markers.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from testdb.config import SchemaSettings
from testdb.errors import SchemaError, first_line
from testdb.migrations import Chain, load_chain
from testdb.migrations._process import run_tool
from testdb.naming import TEMPLATE_INFIX, template_name
from testdb.ownership import LOCK_NAMESPACE, DatabaseRow, Liveness, Marker, list_databases, set_marker
from testdb.provision import clone_strategy, drop_database, missing_createdb, terminate_sessions
from testdb.resolve import resolve_attr
from testdb.servers.base import ServerInfo, connect, scrub, server_major_version
from testdb.urls import libpq_dsn

TEMPLATE_FORMAT = "1"  # bump when the way templates are built changes
BUILD_LOCK = LOCK_NAMESPACE + 1  # exclusive while a template is looked up or built
USE_LOCK = LOCK_NAMESPACE + 2  # shared while a template is cloned; exclusive to drop it

#: Builds the environment a schema command runs with, for the template's URL.
EnvFactory = Callable[[ServerInfo, str], Mapping[str, str]]


@dataclass(frozen=True)
class TemplateResult:
    name: str
    built: bool  # built or extended: this run paid for a build
    seconds: float
    notice: str = ""  # "built", "reused", "extended from <template> (+N revisions)", with why

    @property
    def extended(self) -> bool:
        return self.notice.startswith("extended")


@dataclass(frozen=True)
class Plan:
    """What the template for this checkout is: its name, and its chain when migration-aware."""

    name: str
    chain: Chain | None


def lock_key(name: str) -> int:
    """The second advisory-lock key for a template (an int4 from its name)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:7], 16)


class TemplateHold:
    """A dedicated session holding shared use-locks on templates until it is closed.

    A run takes one on its template before the build lock is released and keeps it until
    its clones exist (their markers then name the template), so no cleanup drops the
    template in between.
    """

    def __init__(self, info: ServerInfo) -> None:
        self.conn = connect(info.admin_url)

    def take(self, name: str) -> None:
        self.conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (USE_LOCK, lock_key(name)))

    def __enter__(self) -> TemplateHold:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()  # the session's end releases its locks


def _expand(patterns: list[str], root: Path) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        matches = [p for p in root.glob(pattern) if p.is_file()]
        if not matches and not any(ch in pattern for ch in "*?["):
            raise SchemaError(f"schema input {pattern} does not exist", hint="fix the path in [schema]")
        found.update(matches)
    return sorted(found)


def schema_digest(schema: SchemaSettings, root: Path, server_major: int, chain: Chain | None = None) -> str:
    """The cache key: changes whenever anything that shapes the schema changes."""
    digest = hashlib.sha256()
    for part in (TEMPLATE_FORMAT, str(server_major), schema.command or "", schema.callable or ""):
        digest.update(part.encode() + b"\0")
    for group in (schema.sql, schema.inputs):
        for path in _expand(group, root):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(b"\1")
    for entry in chain.entries if chain else ():
        digest.update(entry.encode() + b"\n")
    return digest.hexdigest()


def plan_template(
    conn: psycopg.Connection[Any],
    info: ServerInfo,
    prefix: str,
    schema: SchemaSettings,
    root: Path,
    env_for: EnvFactory,
) -> Plan:
    """Name (and chain) of the template this checkout needs on this server."""
    chain = load_chain(schema, root, env_for(info, info.default_database))
    major = server_major_version(conn)
    if chain is not None:
        # Extension starts from an older template, so everything else that shaped it (SQL
        # files, inputs, the callable, the server's major version) must be unchanged: it is
        # part of the chain's base, which an extension source must share.
        rest = schema_digest(schema, root, major)
        chain = replace(chain, base=hashlib.sha256(f"{chain.base}:{rest}".encode()).hexdigest())
    return Plan(template_name(prefix, schema_digest(schema, root, major, chain)), chain)


@contextlib.contextmanager
def build_lock(conn: psycopg.Connection[Any], name: str) -> Iterator[None]:
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (BUILD_LOCK, lock_key(name)))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (BUILD_LOCK, lock_key(name)))


def ensure_template(
    info: ServerInfo,
    prefix: str,
    schema: SchemaSettings,
    marker: Marker,
    root: Path,
    env_for: EnvFactory,
    hold: TemplateHold | None = None,
) -> TemplateResult:
    """The template for this schema: reused, extended from an older one, or built (once, under a lock)."""
    started = time.perf_counter()
    with connect(info.admin_url) as conn:
        plan = plan_template(conn, info, prefix, schema, root, env_for)
        with build_lock(conn, plan.name):
            if hold is not None:  # before looking: a template we see is one nobody may drop now
                hold.take(plan.name)
            rows = list_databases(conn)
            if usable(conn, rows, plan.name):
                terminate_sessions(conn, plan.name)
                return TemplateResult(plan.name, False, time.perf_counter() - started, "reused")
            notice = _make(conn, info, plan, rows, schema, marker, root, env_for)
            drop_stale(conn, prefix, plan.name, schema.keep_templates)
    return TemplateResult(plan.name, True, time.perf_counter() - started, notice)


def usable(conn: psycopg.Connection[Any], rows: list[DatabaseRow], name: str) -> bool:
    for row in rows:
        if row.name == name:
            if row.marker is not None and row.marker.role == "template":
                with contextlib.suppress(psycopg.Error):  # recency for the LRU; not worth failing over
                    set_marker(conn, name, replace(row.marker, used=time.time()))
                return True
            if row.marker is not None:  # a build that died half-way: we hold the lock, so redo it
                drop_database(conn, name)
                return False
            raise SchemaError(
                f"database {name!r} exists and is not testdb's", hint="drop it or change the prefix"
            )
    return False


def _make(
    conn: psycopg.Connection[Any],
    info: ServerInfo,
    plan: Plan,
    rows: list[DatabaseRow],
    schema: SchemaSettings,
    marker: Marker,
    root: Path,
    env_for: EnvFactory,
) -> str:
    """Extend the best older template if the chain allows it, else build; the notice."""
    source, why = extension_source(rows, plan, marker.prefix)
    if source is not None and schema.callable:
        # A fresh build calls it after every revision; an extension could only call it again.
        source, why = None, "a schema callable runs after the migrations"
    if source is not None and plan.chain is not None:
        added = len(plan.chain.revisions) - (len(source.marker.chain or ()) - 1 if source.marker else 0)
        if _extend(conn, info, plan, source.name, marker, root, env_for):
            return f"extended from {source.name} (+{added} revisions)"
        why = f"{source.name} was dropped while we were about to clone it"
    _build(conn, info, plan, schema, marker, root, env_for)
    return f"built ({why})" if why else "built"


def extension_source(rows: list[DatabaseRow], plan: Plan, prefix: str) -> tuple[DatabaseRow | None, str]:
    """The cached template whose revisions are all in ``plan``'s chain, the most of them.

    None with the reason when a cached template of the same base exists but cannot be
    extended (an applied revision was edited, or the graph is not an extension).
    """
    if plan.chain is None:
        return None, ""
    wanted = dict(entry.split(":", 1) for entry in plan.chain.entries[1:])
    best: DatabaseRow | None = None
    why = ""
    for row in sorted(_templates(rows, prefix), key=_recency, reverse=True):
        chain = row.marker.chain if row.marker else None
        if not chain or chain[0] != plan.chain.entries[0]:
            continue
        problem = _not_extended_by(dict(e.split(":", 1) for e in chain[1:]), wanted, row.name)
        if problem:
            why = why or problem
        elif best is None or len(chain) > len(best.marker.chain or ()):  # type: ignore[union-attr]
            best = row
    return best, "" if best else why


def _not_extended_by(applied: dict[str, str], wanted: dict[str, str], name: str) -> str:
    for revision, digest in applied.items():
        if revision not in wanted:
            return f"{name} has revision {revision}, which is not in the current graph"
        if wanted[revision] != digest:
            return f"revision {revision} was edited after {name} applied it"
    return ""


def _templates(rows: list[DatabaseRow], prefix: str) -> list[DatabaseRow]:
    return [
        row
        for row in rows
        if row.name.startswith(prefix + TEMPLATE_INFIX)
        and row.marker is not None
        and row.marker.role == "template"
        and row.marker.prefix == prefix
    ]


def _recency(row: DatabaseRow) -> float:
    return (row.marker.used or row.marker.created) if row.marker else 0.0


def seal_template(conn: psycopg.Connection[Any], name: str, marker: Marker, plan: Plan) -> None:
    """Make ``name`` a template: nobody may connect (a stray session makes every clone fail
    with "source database is being accessed by other users"), then mark it."""
    conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    terminate_sessions(conn, name)
    chain = plan.chain.entries if plan.chain else None
    set_marker(conn, name, replace(marker, role="template", chain=chain, used=time.time()))


def _extend(
    conn: psycopg.Connection[Any],
    info: ServerInfo,
    plan: Plan,
    source: str,
    marker: Marker,
    root: Path,
    env_for: EnvFactory,
) -> bool:
    """Clone ``source`` into the new template and upgrade only the clone; False if ``source`` went away."""
    assert plan.chain is not None
    key = lock_key(source)
    row = conn.execute("SELECT pg_try_advisory_lock_shared(%s, %s)", (USE_LOCK, key)).fetchone()
    if not row or not row[0]:
        return False
    try:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                sql.Identifier(plan.name), sql.Identifier(source), clone_strategy(conn)
            )
        )
    except psycopg.errors.InvalidCatalogName:
        return False
    finally:
        conn.execute("SELECT pg_advisory_unlock_shared(%s, %s)", (USE_LOCK, key))
    with dropped_on_failure(conn, plan.name):
        set_marker(conn, plan.name, replace(marker, role="building", template=source))
        url = info.database_url(plan.name).set(drivername="postgresql+psycopg")
        plan.chain.upgrade(url.render_as_string(hide_password=False), env_for(info, plan.name), root)
        seal_template(conn, plan.name, marker, plan)
    return True


@contextlib.contextmanager
def dropped_on_failure(conn: psycopg.Connection[Any], name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            drop_database(conn, name)
        raise


def _build(
    conn: psycopg.Connection[Any],
    info: ServerInfo,
    plan: Plan,
    schema: SchemaSettings,
    marker: Marker,
    root: Path,
    env_for: EnvFactory,
) -> None:
    name = plan.name
    with dropped_on_failure(conn, name):
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise missing_createdb(conn.info.user, exc) from None
        set_marker(conn, name, marker.with_role("building"))
        url = info.database_url(name)
        psycopg_url = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        for path in _expand(schema.sql, root):
            _run_sql_file(libpq_dsn(url), path, root)
        if plan.chain is not None:
            plan.chain.upgrade(psycopg_url, env_for(info, name), root)
        elif schema.command:
            run_tool(schema.command, env_for(info, name), root, f"schema command {schema.command!r}")
        if schema.callable:
            _run_callable(schema.callable, psycopg_url, root)
        seal_template(conn, name, marker, plan)


def _run_sql_file(dsn: str, path: Path, root: Path) -> None:
    text = path.read_text(encoding="utf-8")
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(text.encode())  # bytes: no %-placeholder parsing of the script
        except psycopg.Error as exc:
            where = str(path.relative_to(root))
            position = exc.diag.statement_position
            if position:
                line_no = text[: int(position)].count("\n") + 1
                line = text.splitlines()[line_no - 1].strip()
                where += f":{line_no}: {line[:120]}"
            raise SchemaError(f"schema SQL failed at {where}: {exc.diag.message_primary or exc}") from None


def _run_callable(spec: str, url: str, root: Path) -> None:
    if ":" not in spec or spec.startswith(":") or spec.endswith(":"):
        raise SchemaError(f"schema callable {spec!r} must look like 'package.module:function'")
    for path in (str(root), str(root / "src")):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        target = resolve_attr(spec)
    except (ImportError, AttributeError) as exc:
        raise SchemaError(f"cannot import schema callable {spec!r}: {exc}") from None
    try:
        target(url)
    except Exception as exc:
        raise SchemaError(
            f"schema callable {spec!r} failed: {type(exc).__name__}: {scrub(first_line(exc))}"
        ) from None


def drop_stale(conn: psycopg.Connection[Any], prefix: str, current: str, keep: int) -> list[str]:
    """Drop this prefix's templates beyond the ``keep`` most recently used; the names dropped.

    Skipped: a template with sessions, one a live run's databases name in their markers,
    and one whose use-lock someone holds (a run cloning from it right now).
    """
    rows = list_databases(conn)
    live = Liveness.read(conn)
    in_use = {r.marker.template for r in rows if r.marker and r.marker.template and live.alive(r.marker)}
    ranked = sorted(_templates(rows, prefix), key=lambda r: (r.name == current, _recency(r)), reverse=True)
    return [row.name for row in ranked[keep:] if row.name not in in_use and drop_unused(conn, row)]


def drop_unused(conn: psycopg.Connection[Any], row: DatabaseRow) -> bool:
    """Drop a template nobody holds (no sessions, no run cloning from it); whether it went."""
    if row.connections or not _try_use_lock(conn, row.name):
        return False
    try:
        with contextlib.suppress(psycopg.Error):
            drop_database(conn, row.name)
            return True
        return False
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (USE_LOCK, lock_key(row.name)))


def _try_use_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (USE_LOCK, lock_key(name))).fetchone()
    return bool(row and row[0])
