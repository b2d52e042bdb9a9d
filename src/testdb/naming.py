"""Worker ids to database names, and the identifier rules those names obey."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from testdb.errors import NamingError

#: PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1), silently.
MAX_IDENTIFIER_BYTES = 63
#: Databases testdb never creates, empties or drops, whatever it is told.
PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})
SERIAL_WORKER = "master"
TEMPLATE_INFIX = "_tpl_"
TEMPLATE_HASH_LEN = 12
RUN_SUFFIX_LEN = 6

_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]*")
_WORKER_RE = re.compile(r"gw(\d+)")


def new_run_id() -> str:
    """A random run id: 12 hex characters, the first RUN_SUFFIX_LEN used in unique names."""
    return secrets.token_hex(6)


def validate_prefix(prefix: str, workers: int, unique: bool = False) -> str:
    """Return ``prefix`` if every name built from it is a plain identifier of at most 63 bytes."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise NamingError(
            f"invalid prefix {prefix!r}: only lowercase letters, digits and underscores are allowed",
        )
    longest = max(
        len(suffix_for(f"gw{max(workers - 1, 0)}", None)),
        len(template_name("", "0" * TEMPLATE_HASH_LEN)),
    )
    if unique:
        longest += 1 + RUN_SUFFIX_LEN
    limit = MAX_IDENTIFIER_BYTES - longest
    if len(prefix.encode()) > limit:
        raise NamingError(
            f"prefix {prefix!r} is too long: {len(prefix)} bytes, at most {limit} with these suffixes",
            hint=f"PostgreSQL names are limited to {MAX_IDENTIFIER_BYTES} bytes; shorten the prefix",
        )
    return prefix


def suffix_for(worker_id: str, run_id: str | None) -> str:
    """The part of a database name after the prefix for ``worker_id`` ('gw3' or 'master')."""
    base = "" if worker_id == SERIAL_WORKER else f"_{worker_id}"
    return base + (f"_{run_id[:RUN_SUFFIX_LEN]}" if run_id else "")


def worker_database(prefix: str, worker_id: str, run_id: str | None = None) -> str:
    """The seed's mapping, generalised: gw0 -> <prefix>_gw0, master -> <prefix>.

    With ``run_id`` (names = "unique") a short run id is appended so that several runs
    can share one server.
    """
    if worker_id != SERIAL_WORKER and not _WORKER_RE.fullmatch(worker_id):
        raise NamingError(f"invalid worker id {worker_id!r}", hint="worker ids are gw0, gw1, ... or master")
    return prefix + suffix_for(worker_id, run_id)


def worker_ids(workers: int) -> list[str]:
    """xdist worker ids for ``workers`` workers: gw0 ... gw{N-1}."""
    return [f"gw{i}" for i in range(workers)]


def worker_index(worker_id: str) -> int | None:
    """N for 'gwN', None for the serial worker."""
    match = _WORKER_RE.fullmatch(worker_id)
    return int(match.group(1)) if match else None


def template_name(prefix: str, digest: str) -> str:
    """Template databases are shared by runs of the same prefix, so they carry no run id."""
    return f"{prefix}{TEMPLATE_INFIX}{digest[:TEMPLATE_HASH_LEN]}"


def is_protected(name: str, default_database: str | None = None) -> bool:
    """True for names testdb must never touch."""
    return name in PROTECTED_DATABASES or name == default_database


@dataclass(frozen=True)
class DatabaseNames:
    """Every database one run uses."""

    serial: str
    workers: dict[str, str]

    def all(self) -> list[str]:
        return [self.serial, *self.workers.values()]

    def for_worker(self, worker_id: str) -> str:
        return self.serial if worker_id == SERIAL_WORKER else self.workers[worker_id]


def database_names(prefix: str, workers: int, run_id: str | None = None) -> DatabaseNames:
    """Names for the serial database and ``workers`` worker databases."""
    return DatabaseNames(
        serial=worker_database(prefix, SERIAL_WORKER, run_id),
        workers={w: worker_database(prefix, w, run_id) for w in worker_ids(workers)},
    )
