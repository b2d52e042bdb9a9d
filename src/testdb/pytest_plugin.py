"""pytest plugin (entry point ``testdb``): hooks only; the fixtures are in :mod:`testdb.fixtures`.

PYTEST_DONT_REWRITE: this module loads in every pytest run of an environment where testdb
is installed, most of which never use it; rewriting its asserts would be wasted work
(and is redone on every start where bytecode is not written).

Modes:

- under ``testdb run`` (or after ``eval "$(testdb up)"``): the environment names every
  worker's database; each worker points ``DATABASE_URL`` & co. at its own before any
  conftest or test module is imported;
- self-provisioning (``pytest --testdb`` or ``[tool.testdb.pytest] provision = true``): the
  controller provisions before workers start and tears down at the end.

Idle (neither), the hooks return at once and nothing but this module is imported.
Per-run state lives in ``config.stash`` (:data:`STATE_KEY`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from testdb import lifecycle
    from testdb.config import Settings
    from testdb.worker import WorkerDatabase

RUN_ID_VAR = "TESTDB_RUN_ID"
XDIST_WORKER_VAR = "PYTEST_XDIST_WORKER"


@dataclass
class PluginState:
    """What the hooks set up for this process, and what they must undo."""

    settings: Settings | None = None
    worker: WorkerDatabase | None = None
    saved_env: dict[str, str | None] = field(default_factory=dict)
    run: contextlib.ExitStack | None = None
    progress: lifecycle.Progress | None = None


STATE_KEY = pytest.StashKey[PluginState]()


def plugin_state(config: pytest.Config) -> PluginState | None:
    """This run's state, or None when testdb is idle in this pytest run."""
    return config.stash.get(STATE_KEY, None)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("testdb", "per-worker PostgreSQL databases")
    group.addoption(
        "--testdb",
        action="store_true",
        default=None,
        help="provision databases for this run (self-provisioning mode)",
    )
    group.addoption("--testdb-server", default=None, help="auto | url | local | embedded | docker")
    # Fixtures live in their own module (pytest-django's plugin/fixtures split).
    pluginmanager.import_plugin("testdb.fixtures")
    pluginmanager.import_plugin("testdb.fresh.plugin")  # testdb_fresh_*: a pool per test process


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Before any conftest is imported: provision (controller) and point this process at its DB."""
    in_run = RUN_ID_VAR in os.environ
    is_worker = bool(os.environ.get(XDIST_WORKER_VAR))
    if not in_run and (is_worker or not _provision_requested(early_config)):
        return  # not a testdb run: stay out of the way (and import nothing heavy)
    state = early_config.stash[STATE_KEY] = PluginState()
    _with_one_line_errors(state, lambda: _set_up(early_config, state, in_run))


def _set_up(config: pytest.Config, state: PluginState, in_run: bool) -> None:
    from testdb.config import load_settings
    from testdb.worker import apply_environment, current_worker_id, resolve_worker, worker_environment

    settings = state.settings = load_settings(Path.cwd())
    if not in_run:
        _self_provision(config, state)
        settings = state.settings
    if _is_xdist_controller(config):
        return  # it runs no test: the workers resolve their own databases
    state.worker = resolve_worker(os.environ, current_worker_id())
    state.saved_env.update(apply_environment(os.environ, worker_environment(state.worker, settings)))


def _with_one_line_errors(state: PluginState, action: Any) -> None:
    """Run ``action``; a testdb or server failure becomes one UsageError line (and nothing half-made)."""
    from testdb.errors import TestdbError

    psycopg_error: Any = _psycopg_error()
    try:
        action()
    except (TestdbError, psycopg_error) as exc:
        if state.run is not None:
            state.run.close()
            state.run = None
        if isinstance(exc, TestdbError):
            raise pytest.UsageError(f"testdb: {exc.message} (hint: {exc.hint})") from None
        from testdb.servers.base import scrub

        raise pytest.UsageError(f"testdb: PostgreSQL refused: {scrub(str(exc).strip())}") from None


def _psycopg_error() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _is_xdist_controller(config: pytest.Config) -> bool:
    """True in the xdist controller of a ``-n N`` run (N >= 1): it collects, workers test."""
    if os.environ.get(XDIST_WORKER_VAR):
        return False
    return getattr(config.known_args_namespace, "numprocesses", None) not in (None, 0, "0")


def _provision_requested(config: pytest.Config) -> bool:
    """``--testdb``, or ``pytest.provision = true`` in testdb.toml / [tool.testdb] / env.

    Read with the standard library only: this runs in every pytest start.
    """
    flag = config.known_args_namespace.testdb
    if flag is not None:
        return bool(flag)
    if os.environ.get("TESTDB_PYTEST__PROVISION", "").lower() in ("1", "true", "yes"):
        return True
    from testdb.configfile import find_config_file, read_config_table
    from testdb.errors import TestdbError

    try:
        path = find_config_file(Path.cwd())
        table = read_config_table(path) if path is not None else {}
    except TestdbError as exc:
        raise pytest.UsageError(f"testdb: {exc.message} (hint: {exc.hint})") from None
    section = table.get("pytest", {})
    return isinstance(section, dict) and bool(section.get("provision"))


def _self_provision(config: pytest.Config, state: PluginState) -> None:
    from testdb import lifecycle
    from testdb.config import load_settings
    from testdb.worker import apply_environment

    server = config.known_args_namespace.testdb_server
    if server:
        state.settings = load_settings(Path.cwd(), {"server": server})
    settings = state.settings
    assert settings is not None
    workers = _requested_workers(config)
    request = lifecycle.Request(workers, settings.names == "unique", serial=not _is_xdist_controller(config))
    # Waiting for connections on a shared server is said at once, not after the wait.
    state.progress = progress = lifecycle.Progress(notify=_say)
    stack = contextlib.ExitStack()
    run = stack.enter_context(lifecycle.bound_run(settings, request, progress=progress))
    state.run = stack
    # Workers are spawned later and inherit this environment.
    state.saved_env.update(apply_environment(os.environ, lifecycle.environment(run, settings)))


def _say(message: str) -> None:
    import sys

    sys.stderr.write(f"testdb: {message}\n")


def _requested_workers(config: pytest.Config) -> int:
    value = getattr(config.known_args_namespace, "numprocesses", None)
    if value in ("auto", "logical"):
        return os.cpu_count() or 1
    return max(int(value or 0), 1)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = plugin_state(config)
    if state is None:
        return
    from testdb.worker import restore_environment

    restore_environment(os.environ, state.saved_env)
    state.saved_env = {}
    if state.run is not None:
        state.run.close()
        state.run = None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = plugin_state(config)
    progress = state.progress if state is not None else None
    if progress is None or os.environ.get(XDIST_WORKER_VAR):
        return
    parts = [f"{name} {seconds:.2f}s" for name, seconds in progress.timings.items()]
    terminalreporter.write_sep("-", "testdb timings")
    terminalreporter.write_line(", ".join(parts) + f"; template {progress.template_notice}; teardown follows")
