"""Build the schema once into a template database, keyed by a hash of its inputs.

The template's name is ``<prefix>_tpl_<hash>``, where the hash covers every schema source
file, the command and callable strings, the extra ``inputs`` files and the server's major
version. A matching template (marked as testdb's) is reused; a miss builds one under an
advisory lock, so concurrent runs build it once. After a successful build, older templates
of the same prefix are dropped (the newest ``KEEP_TEMPLATES`` stay).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from testdb.config import SchemaSettings
from testdb.errors import SchemaError, first_line
from testdb.naming import TEMPLATE_INFIX, template_name
from testdb.ownership import LOCK_NAMESPACE, Marker, list_databases, set_marker
from testdb.provision import drop_database, terminate_sessions
from testdb.resolve import resolve_attr
from testdb.servers.base import ServerInfo, connect, scrub, server_major_version
from testdb.urls import libpq_dsn

KEEP_TEMPLATES = 2
TEMPLATE_FORMAT = "1"  # bump when the way templates are built changes
OUTPUT_TAIL_LINES = 5

#: Builds the environment a schema command runs with, for the template's URL.
EnvFactory = Callable[[ServerInfo, str], Mapping[str, str]]


@dataclass(frozen=True)
class TemplateResult:
    name: str
    built: bool
    seconds: float


def _expand(patterns: list[str], root: Path) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        matches = [p for p in root.glob(pattern) if p.is_file()]
        if not matches and not any(ch in pattern for ch in "*?["):
            raise SchemaError(f"schema input {pattern} does not exist", hint="fix the path in [schema]")
        found.update(matches)
    return sorted(found)


def schema_digest(schema: SchemaSettings, root: Path, server_major: int) -> str:
    """The cache key: changes whenever anything that shapes the schema changes."""
    digest = hashlib.sha256()
    for part in (TEMPLATE_FORMAT, str(server_major), schema.command or "", schema.callable or ""):
        digest.update(part.encode() + b"\0")
    for group in (schema.sql, schema.inputs):
        for path in _expand(group, root):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(b"\1")
    return digest.hexdigest()


def ensure_template(
    info: ServerInfo,
    prefix: str,
    schema: SchemaSettings,
    marker: Marker,
    root: Path,
    env_for: EnvFactory,
) -> TemplateResult:
    """The template for this schema: reused if it exists, else built (once, under a lock)."""
    started = time.perf_counter()
    with connect(info.admin_url) as conn:
        name = template_name(prefix, schema_digest(schema, root, server_major_version(conn)))
        key = int(hashlib.sha256(name.encode()).hexdigest()[:7], 16)
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE + 1, key))
        try:
            if _usable(conn, name):
                terminate_sessions(conn, name)
                return TemplateResult(name, False, time.perf_counter() - started)
            _build(conn, info, name, schema, marker, root, env_for)
            _drop_stale(conn, prefix, name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE + 1, key))
    return TemplateResult(name, True, time.perf_counter() - started)


def _usable(conn: psycopg.Connection[Any], name: str) -> bool:
    for row in list_databases(conn):
        if row.name == name:
            if row.marker is not None and row.marker.role == "template":
                return True
            if row.marker is not None:  # a build that died half-way: we hold the lock, so redo it
                drop_database(conn, name)
                return False
            raise SchemaError(
                f"database {name!r} exists and is not testdb's", hint="drop it or change the prefix"
            )
    return False


def _build(
    conn: psycopg.Connection[Any],
    info: ServerInfo,
    name: str,
    schema: SchemaSettings,
    marker: Marker,
    root: Path,
    env_for: EnvFactory,
) -> None:
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        set_marker(conn, name, marker.with_role("building"))
        url = info.database_url(name)
        for path in _expand(schema.sql, root):
            _run_sql_file(libpq_dsn(url), path, root)
        if schema.command:
            _run_command(schema.command, env_for(info, name), root)
        if schema.callable:
            _run_callable(
                schema.callable,
                url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False),
                root,
            )
        # Nobody may connect to a template: a stray session makes every clone fail with
        # "source database is being accessed by other users".
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        terminate_sessions(conn, name)
        set_marker(conn, name, marker.with_role("template"))
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            drop_database(conn, name)
        raise


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


def _run_command(command: str, env: Mapping[str, str], root: Path) -> None:
    result = subprocess.run(  # noqa: S602 - the user's configured shell command, by design
        command,
        shell=True,
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-OUTPUT_TAIL_LINES:]
        tail = " | ".join(line.strip() for line in output) or "(no output)"
        raise SchemaError(f"schema command {command!r} exited with {result.returncode}: {tail}")


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


def _drop_stale(conn: psycopg.Connection[Any], prefix: str, current: str) -> None:
    rows = [
        row
        for row in list_databases(conn)
        if row.name.startswith(prefix + TEMPLATE_INFIX)
        and row.name != current
        and row.marker is not None
        and row.marker.role == "template"
        and row.marker.prefix == prefix
        and row.connections == 0
    ]
    rows.sort(key=lambda row: row.marker.created if row.marker else 0, reverse=True)
    for row in rows[KEEP_TEMPLATES - 1 :]:
        with contextlib.suppress(psycopg.Error):
            drop_database(conn, row.name)
