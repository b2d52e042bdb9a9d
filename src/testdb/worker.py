"""One test process's view of a run: which database and Redis number are its own.

A run hands its workers ``TESTDB_WORKER_URL_GW<N>``; a worker that xdist started to
replace a crashed one has a new id and no URL, so it clones its own database from the
run's template (``TESTDB_ADMIN_URL`` + ``TESTDB_TEMPLATE``), marked with the run's id so the
run's teardown drops it too. Nothing here is pytest-specific.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testdb.envvars import WORKER_REDIS_VAR, WORKER_URL_VAR, Target, target_environment
from testdb.errors import StateError
from testdb.naming import SERIAL_WORKER, worker_database
from testdb.ownership import Marker, Role, list_databases
from testdb.servers.base import ServerInfo, admin_connection
from testdb.urls import PgUrl, make_url, with_driver

if TYPE_CHECKING:
    from testdb.config import Settings

ADMIN_URL_VAR = "TESTDB_ADMIN_URL"
TEMPLATE_VAR = "TESTDB_TEMPLATE"
PREFIX_VAR = "TESTDB_PREFIX"
UNIQUE_VAR = "TESTDB_UNIQUE"
XDIST_WORKER_VAR = "PYTEST_XDIST_WORKER"
LAZY_SERIAL_VAR = "TESTDB_SERIAL_LAZY"


@dataclass(frozen=True)
class WorkerDatabase:
    """This process's database (and Redis) and the settings that shape its fixtures."""

    worker_id: str
    target: Target
    pool: tuple[int, int]

    @property
    def url(self) -> PgUrl:
        return self.target.url

    def sqlalchemy_url(self) -> str:
        return with_driver(self.url, "psycopg")

    def async_url(self, driver: str) -> str:
        return with_driver(self.url, driver)


def current_worker_id(environ: Mapping[str, str] | None = None) -> str:
    """'gw3' inside an xdist worker, else 'master'."""
    return (environ if environ is not None else os.environ).get(XDIST_WORKER_VAR) or SERIAL_WORKER


def worker_url_var(worker_id: str) -> str:
    return "DATABASE_URL" if worker_id == SERIAL_WORKER else WORKER_URL_VAR + worker_id.upper()


def resolve_worker(environ: Mapping[str, str], worker_id: str) -> WorkerDatabase:
    """This worker's database, cloning one if the run did not provision it (replaced worker)."""
    run_id = environ.get("TESTDB_RUN_ID", "")
    serial_url = environ.get("TEST_DATABASE_URL") or environ.get("DATABASE_URL")
    url_text = environ.get(worker_url_var(worker_id)) if worker_id != SERIAL_WORKER else serial_url
    if not url_text:
        url_text = _clone_for_replacement(environ, worker_id, run_id)
    elif worker_id == SERIAL_WORKER and environ.get(LAZY_SERIAL_VAR) == "1":
        url_text = _clone_for_replacement(environ, worker_id, run_id, role="serial")
    redis = environ.get(WORKER_REDIS_VAR + worker_id.upper()) if worker_id != SERIAL_WORKER else None
    redis = redis or (environ.get("REDIS_URL") if worker_id == SERIAL_WORKER else None)
    pool = (int(environ.get("TESTDB_POOL_SIZE", "5")), int(environ.get("TESTDB_MAX_OVERFLOW", "5")))
    redis_db = int(redis.rsplit("/", 1)[1]) if redis and redis.rsplit("/", 1)[1].isdigit() else None
    return WorkerDatabase(worker_id, Target(make_url(url_text), worker_id, run_id, redis, redis_db), pool)


def _clone_for_replacement(
    environ: Mapping[str, str], worker_id: str, run_id: str, role: Role = "worker"
) -> str:
    """Clone this process's database from the run's template (a replaced worker, a lazy serial)."""
    admin, template = environ.get(ADMIN_URL_VAR), environ.get(TEMPLATE_VAR)
    if not admin or not template or not run_id:
        raise StateError(
            f"no database for worker {worker_id} in this environment",
            hint="run the tests under 'testdb run -- pytest ...' or with 'pytest --testdb'",
        )
    info = ServerInfo(kind="url", url=admin)
    prefix = environ.get(PREFIX_VAR, "test")
    name = worker_database(prefix, worker_id, run_id if environ.get(UNIQUE_VAR) == "1" else None)
    with admin_connection(info) as conn:
        existing = {row.name: row.marker for row in list_databases(conn)}
    if name in existing:
        marker = existing[name]
        if marker is None or marker.run_id != run_id:
            raise StateError(
                f"database {name!r} for replacement worker {worker_id} exists and is not this run's",
                hint="testdb never reuses another run's or a stranger's database; drop it or use --unique",
            )
    else:
        marker = Marker.for_run(run_id, role, prefix, None)
        # Same liveness as the rest of the run: its lock, or the lease its databases carry.
        siblings = [m for m in existing.values() if m is not None and m.run_id == run_id]
        marker.expires = siblings[0].expires if siblings else None
        from testdb.provision import clone_databases

        clone_databases(info, {name: role}, template, marker)
    return info.database_url(name).render_as_string(hide_password=False)


def worker_environment(worker: WorkerDatabase, settings: Settings) -> dict[str, str]:
    """Variables that point the application in this process at its own database."""
    env = target_environment(worker.target, settings.env, settings.async_driver)
    env["TESTDB_WORKER_ID"] = worker.worker_id
    env["TESTDB_POOL_SIZE"], env["TESTDB_MAX_OVERFLOW"] = str(worker.pool[0]), str(worker.pool[1])
    # The seed's own names for the pool budget, read by many settings classes.
    env["DATABASE_POOL_SIZE"], env["DATABASE_POOL_OVERFLOW"] = (
        env["TESTDB_POOL_SIZE"],
        env["TESTDB_MAX_OVERFLOW"],
    )
    return env


def apply_environment(environ: MutableMapping[str, str], values: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``values``; return what to restore (None = was unset)."""
    saved = {name: environ.get(name) for name in values}
    environ.update(values)
    return saved


def restore_environment(environ: MutableMapping[str, str], saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
