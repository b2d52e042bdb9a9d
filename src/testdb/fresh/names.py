"""Names and roles of the fresh-database pools' databases (light: no driver imported).

- ``<prefix>_f<run6>_<worker>_<n>``: a pool's clone (role ``fresh``); six hex digits of the
  run id, as unique names use, keep it within PostgreSQL's 63 bytes;
- ``<prefix>_f<run6>_s_<n>``: a spare the xdist controller cloned ahead (no worker id is "s");
- ``<prefix>_failed_<id>``: a failed test's database, kept (role ``failed``, with a lease).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Final

from testdb.naming import RUN_SUFFIX_LEN

if TYPE_CHECKING:
    from testdb.ownership import DatabaseRow

FRESH_ROLE: Final = "fresh"
FAILED_ROLE: Final = "failed"
FAILED_INFIX: Final = "_failed_"
SPARE_TAG: Final = "s"


def fresh_prefix(prefix: str, run_id: str) -> str:
    """What every fresh database name of this run starts with."""
    return f"{prefix}_f{run_id[:RUN_SUFFIX_LEN]}_"


def spare_prefix(prefix: str, run_id: str) -> str:
    """What the controller's spare clones are called before a worker claims one."""
    return f"{fresh_prefix(prefix, run_id)}{SPARE_TAG}_"


def worker_of(name: str, start: str) -> str:
    """The worker id in a fresh database's name (``start`` is its :func:`fresh_prefix`)."""
    return name[len(start) :].rsplit("_", 1)[0]


def unmarked_fresh_clones(
    rows: Sequence[DatabaseRow], prefix: str, run_id: str, workers: Collection[str] | None = None
) -> list[str]:
    """This run's fresh clones (of ``workers``, or all) whose marker never landed.

    ``CREATE DATABASE`` runs to its end on the server even when the process that sent it
    died before its ``COMMENT``; such a clone is unmarked, but its name carries this run's
    id (and the dead worker's), which no one else's database does, so it is still ours.
    """
    start = fresh_prefix(prefix, run_id)
    return [
        row.name
        for row in rows
        if row.marker is None
        and row.name.startswith(start)
        and (workers is None or worker_of(row.name, start) in workers)
    ]
