"""What the tests look at on the server side: database names, and processes."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

#: The machine's PostgreSQL, as a superuser (trust authentication).
LOCAL: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
#: Databases that exist on the local server and are not testdb's; nothing may touch them.
PREEXISTING = ("postgres", "template0", "template1", "test")
#: A recognisable password: put into URLs everywhere, it must never be printed (but in env output).
SECRET = "Sup3rS3cret-e2e"
#: Superuser password of the ``password_server`` fixture.
ADMIN_PASSWORD = "Adm1n-e2e-pw"


def new_prefix() -> str:
    """A prefix no other test uses: ``e2e_`` and 6 hex digits (always 10 characters)."""
    return "e2e_" + secrets.token_hex(3)


def database_names(conn: psycopg.Connection[Any], prefix: str = "") -> set[str]:
    """Names of the databases on ``conn``'s server that start with ``prefix``."""
    rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    return {name for (name,) in rows if name.startswith(prefix)}


def run_databases(conn: psycopg.Connection[Any], prefix: str) -> set[str]:
    """The serial and worker databases named with ``prefix`` (not its schema templates)."""
    return {name for name in database_names(conn, prefix) if "_tpl_" not in name}


def drop_prefixed(conn: psycopg.Connection[Any], prefix: str) -> None:
    """Drop every database whose name starts with ``prefix`` (only those)."""
    assert prefix.startswith("e2e_"), prefix
    for name in sorted(database_names(conn, prefix)):
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def password_server_databases(port: int) -> set[str]:
    """Every database on the ``password_server`` fixture's server."""
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=ADMIN_PASSWORD) as conn:
        return database_names(conn)


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline and _state(entry) != "Z":
                found.append(int(entry.name))
    return found


def _state(proc: Path) -> str:
    with contextlib.suppress(OSError, IndexError):
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    return "?"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    proc = Path(f"/proc/{pid}")
    return proc.exists() and _state(proc) not in ("Z", "?")
