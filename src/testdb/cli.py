"""The ``testdb`` command: argument parsing and output only.

Every command calls a documented function of the package (``lifecycle``, ``clean``,
``prune``). Environment output goes to stdout (so ``eval "$(testdb up)"`` works); notices,
progress and tables go to stderr. Errors are one ``testdb: error:`` line plus a ``hint:``
line and exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from testdb import lifecycle
from testdb.config import SERVER_KINDS, Settings, load_settings
from testdb.envvars import OUTPUT_FORMATS, format_environment, mask_url
from testdb.errors import ConfigError, TestdbError
from testdb.prune import prune as prune_databases
from testdb.prune import prune_clusters, prune_containers
from testdb.runner import check_command, numprocesses_from, resolve_workers, run_child
from testdb.servers import find_server
from testdb.servers.base import ServerInfo, scrub
from testdb.servers.url import acquire as _acquire_url
from testdb.signals import interrupts_raise, shielded
from testdb.state import RunState, describe_age, load_state, remove_state, require_state, save_state

ERROR_EXIT = 2
app = typer.Typer(
    name="testdb",
    help="Real PostgreSQL databases for parallel integration tests: one per pytest-xdist worker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Workers = Annotated[int | None, typer.Option("--workers", "-n", help="Number of xdist workers (gw0..gwN-1).")]
Server = Annotated[str | None, typer.Option("--server", help="auto | url | local | embedded | docker")]
UrlOpt = Annotated[
    str | None, typer.Option("--url", help="Existing server: postgresql://USER:PASS@HOST:PORT/DB")
]
Prefix = Annotated[str | None, typer.Option("--prefix", help="Database name prefix (default 'test').")]
Unique = Annotated[bool, typer.Option("--unique", help="Append the run id to every name (share a server).")]
Format = Annotated[str, typer.Option("--format", "-f", help="shell | dotenv | json | github")]
Ttl = Annotated[str | None, typer.Option("--ttl", help="Lease of a detached run, e.g. 30m, 4h.")]
DropTemplates = Annotated[
    bool, typer.Option("--templates", help="Also drop this prefix's cached schema templates.")
]
KeepServer = Annotated[bool, typer.Option("--keep-server", help="Keep the embedded cluster for the next up.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config file (default testdb.toml).")
    ] = None,
) -> None:
    if config is not None:
        os.environ["TESTDB_CONFIG"] = str(config)


def _settings(**options: Any) -> Settings:
    server = options.get("server")
    if server is not None and server not in SERVER_KINDS:
        raise ConfigError(
            f"unknown server kind {server!r}", hint="--server takes: " + ", ".join(SERVER_KINDS)
        )
    if options.pop("unique", False):
        options["names"] = "unique"
    if options.pop("keep_server", False):
        options["embedded"] = {"keep": True}
    return load_settings(Path.cwd(), options)


def url_server(url: str) -> ServerInfo:
    return _acquire_url(url, "--url")


def _refuse_if_up(settings: Settings) -> None:
    existing = load_state(settings.state_dir)
    if existing is not None:
        raise TestdbError(
            f"run {existing.run_id} is already up here ({len(existing.databases)} databases)",
            hint="use 'testdb env' to print it, or 'testdb down' first",
        )


def _check_format(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint="--format takes: " + ", ".join(OUTPUT_FORMATS))


def _say(message: str) -> None:
    err.print(message, markup=False)


def _report_progress(progress: lifecycle.Progress, state: RunState) -> None:
    for notice in progress.notices:
        _say(f"testdb: {notice}")
    _say(f"testdb: server: {state.server.kind} ({state.server.reason})")
    verb = "built" if progress.template_built else "reused"
    _say(f"testdb: template {state.template} {verb} in {progress.timings.get('template', 0):.2f}s")
    _say(
        f"testdb: created {len(state.databases)} databases in {progress.timings.get('clones', 0):.2f}s"
        f" ({state.serial} + {len(state.workers)} workers)"
    )


@app.command()
def up(
    workers: Workers = None,
    server: Server = None,
    url: UrlOpt = None,
    prefix: Prefix = None,
    unique: Unique = False,
    fmt: Format = "shell",
    ttl: Ttl = None,
    keep_server: KeepServer = False,
) -> None:
    """Create the serial and per-worker databases and print their environment."""
    _check_format(fmt)
    settings = _settings(
        server=server,
        url=url,
        prefix=prefix,
        workers=workers,
        unique=unique,
        ttl=ttl,
        keep_server=keep_server,
    )
    _refuse_if_up(settings)
    progress = lifecycle.Progress()
    count = workers if workers is not None else resolve_workers(None, settings.workers)
    with interrupts_raise():
        state = lifecycle.up(
            settings, count, unique=settings.names == "unique", root=Path.cwd(), progress=progress
        )
        try:
            save_state(state, settings.state_dir)
        except BaseException:
            with shielded():
                lifecycle.down(state)
            raise
    _report_progress(progress, state)
    sys.stdout.write(format_environment(lifecycle.environment(state, settings), fmt))


@app.command()
def env(fmt: Format = "shell") -> None:
    """Print the environment of what is up (and renew its lease)."""
    _check_format(fmt)
    settings = _settings()
    state = require_state(settings.state_dir)
    lifecycle.require_server(state)
    save_state(lifecycle.renew_lease(state, settings.ttl), settings.state_dir)
    sys.stdout.write(format_environment(lifecycle.environment(state, settings), fmt))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    workers: Workers = None,
    server: Server = None,
    url: UrlOpt = None,
    prefix: Prefix = None,
    unique: Unique = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the databases afterwards.")] = False,
    keep_server: KeepServer = False,
) -> None:
    """Bring databases up, run COMMAND with their environment, tear everything down.

    Usage: testdb run [-n N] -- COMMAND [ARGS...]. Exits with COMMAND's exit code.
    """
    command = list(ctx.args)
    check_command(command)
    settings = _settings(
        server=server,
        url=url,
        prefix=prefix,
        workers=workers,
        unique=unique,
        keep_server=keep_server,
    )
    count = workers if workers is not None else resolve_workers(numprocesses_from(command), settings.workers)
    progress = lifecycle.Progress()
    unique_names = settings.names == "unique"
    with interrupts_raise():
        if keep:
            _refuse_if_up(settings)
            state = lifecycle.up(settings, count, unique=unique_names, root=Path.cwd(), progress=progress)
            save_state(state, settings.state_dir)
            code = _run_command(command, state, settings, progress)
            _say(
                f"testdb: kept {len(state.databases)} databases; serial:"
                f" {mask_url(state.server.database_url(state.serial))}"
                " ('testdb env' prints the environment, 'testdb down' removes them)"
            )
        else:
            # A run killed with SIGKILL cannot tear down: its state file lets 'testdb status'
            # show what it left and 'testdb down' remove it ('testdb prune' works without it).
            record = load_state(settings.state_dir) is None
            with lifecycle.bound_run(
                settings, count, unique=unique_names, root=Path.cwd(), progress=progress
            ) as state:
                if record:
                    save_state(state, settings.state_dir)
                try:
                    code = _run_command(command, state, settings, progress)
                finally:
                    if record:
                        remove_state(settings.state_dir)
    _print_timings(progress)
    if progress.server_lost is not None:
        err.print(
            f"testdb: error: the {state.server.kind} server stopped during the run"
            f" ({progress.server_lost}); its files were removed",
            markup=False,
        )
        err.print(
            "hint: something killed it (out of memory? a cleanup script?); rerun the tests", markup=False
        )
        raise typer.Exit(code or ERROR_EXIT)
    raise typer.Exit(code)


def _run_command(
    command: list[str], state: RunState, settings: Settings, progress: lifecycle.Progress
) -> int:
    _report_progress(progress, state)
    with progress.phase("command"):
        result = run_child(command, lifecycle.environment(state, settings), settings.grace)
    return result.returncode


def _print_timings(progress: lifecycle.Progress) -> None:
    table = Table(title="testdb timings", title_justify="left", show_edge=False)
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    labels = {
        "server": "server start",
        "template": "template",
        "clones": "clones",
        "command": "test command",
        "teardown": "teardown",
    }
    for key, label in labels.items():
        if key in progress.timings:
            suffix = ""
            if key == "template" and progress.template_built is not None:
                suffix = " (built)" if progress.template_built else " (reused)"
            table.add_row(label + suffix, f"{progress.timings[key]:.2f}")
    err.print(table)


@app.command()
def down(
    stop_server: Annotated[
        bool,
        typer.Option("--stop-server", help="Also stop a kept embedded server or reused Docker container."),
    ] = False,
    templates: DropTemplates = False,
) -> None:
    """Drop what 'up' created and stop what it started. Nothing up is not an error."""
    settings = _settings()
    state = load_state(settings.state_dir)
    if state is None:
        _say("testdb: nothing is up here")
        return
    if state.expires is None and lifecycle.bound_run_alive(state):
        raise TestdbError(
            f"run {state.run_id} is still running (pid {state.owner_pid}); it tears down when it ends",
            hint="stop that 'testdb run' (Ctrl-C) instead; 'testdb down' is for detached runs and dead ones",
        )
    with shielded():
        if templates and not (state.server.owned and not state.server.extra.get("keep")):
            dropped_templates = lifecycle.drop_templates(state.server, state.prefix)
            _say(f"testdb: dropped {len(dropped_templates)} cached templates")
        dropped = lifecycle.down(state, stop_server=stop_server)
        remove_state(settings.state_dir)
    stopped = (
        " and stopped the server"
        if state.server.owned and (stop_server or not state.server.extra.get("keep"))
        else ""
    )
    _say(f"testdb: dropped {len(dropped)} databases{stopped}")


@app.command()
def status() -> None:
    """Show the run that is up: server, databases, owner, age (passwords masked)."""
    settings = _settings()
    state = load_state(settings.state_dir)
    if state is None:
        _say("testdb: nothing is up here")
        info = find_server(settings)
        if info is not None:
            _print_kept(info, settings.prefix)
        return
    lifecycle.renew_lease(state, settings.ttl)
    save_state(state, settings.state_dir)
    rows = lifecycle.database_status(state)
    table = Table(title=f"testdb run {state.run_id}", title_justify="left")
    for column in ("database", "role", "exists", "connections"):
        table.add_column(column)
    for name, role, exists, connections in rows:
        table.add_row(name, role, "yes" if exists else "missing", str(connections))
    lease = (
        "none" if state.expires is None else f"expires in {max(0, int(state.expires - time.time())) // 60}m"
    )
    err.print(
        f"server: {state.server.kind} {mask_url(state.server.url)} ({state.server.reason})",
        markup=False,
    )
    alive = "alive" if lifecycle.run_alive(state) else "dead (testdb down removes what it left)"
    err.print(f"owner: run {state.run_id} ({state.owner}, pid {state.owner_pid})", markup=False)
    err.print(
        f"age: {describe_age(state.created)}   lease: {lease}   run: {alive}   template: {state.template}",
        markup=False,
    )
    if state.server.kind == "docker":
        err.print(_container_line(state), markup=False)
    Console(highlight=False).print(table)
    _print_kept(state.server, state.prefix)


def _print_kept(info: ServerInfo, prefix: str) -> None:
    """Failed tests' databases kept for inspection (testdb_fresh_* fixtures), with their leases."""
    from testdb.fresh.kept import kept_databases

    with contextlib.suppress(TestdbError):  # status still reports the run when this fails
        for db in kept_databases(info, prefix):
            minutes = None if db.expires is None else max(0, int(db.expires - time.time())) // 60
            left = "no lease" if minutes is None else f"{minutes}m left"
            err.print(f"kept (failed test): {db.url} ({left}; testdb prune drops it after)", markup=False)


@app.command()
def clean(
    worker: Annotated[
        str | None, typer.Option("--worker", help="Only this worker's database (gw3, master).")
    ] = None,
    database: Annotated[str | None, typer.Option("--database", help="Only this database.")] = None,
    url: UrlOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also empty a database testdb did not create.")
    ] = False,
) -> None:
    """Delete every row, in foreign-key-safe order, in the run's databases (or one of them)."""
    settings = _settings(url=url)
    if url is not None:
        given = url_server(url)
        databases = [database or given.default_database]
        # The URL names the database to empty; manage it from the maintenance database.
        info = ServerInfo(kind=given.kind, url=given.database_url("postgres").render_as_string(False))
        run_id: str | None = None
    else:
        state = require_state(settings.state_dir)
        save_state(lifecycle.renew_lease(state, settings.ttl), settings.state_dir)
        info = state.server
        databases = _pick_databases(state, worker, database)
        run_id = state.run_id
    reports = lifecycle.clean_databases(info, databases, settings, force=force, run_id=run_id)
    table = Table(title="testdb clean", title_justify="left", show_edge=False)
    for column in ("database", "tables emptied", "rows", "ms"):
        table.add_column(column, justify="left" if column == "database" else "right")
    for name, report in zip(databases, reports, strict=True):
        table.add_row(name, str(len(report.emptied)), str(report.rows), f"{report.seconds * 1000:.1f}")
    err.print(table)


def _pick_databases(state: RunState, worker: str | None, database: str | None) -> list[str]:
    if worker is not None:
        if worker == "master":
            return [state.serial]
        if worker not in state.workers:
            raise ConfigError(
                f"no worker {worker!r} in this run", hint="workers: " + ", ".join(["master", *state.workers])
            )
        return [state.workers[worker]]
    if database is not None:
        return [database]
    return state.databases


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be dropped.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Drop even databases that still have connections.")
    ] = False,
    templates: Annotated[
        bool, typer.Option("--templates", help="Also drop cached schema templates.")
    ] = False,
    prefix: Prefix = None,
    server: Server = None,
    url: UrlOpt = None,
) -> None:
    """Drop what dead runs left behind: databases, embedded clusters and Docker containers."""
    settings = _settings(server=server, url=url)
    state = load_state(settings.state_dir)
    clusters = prune_clusters(dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    for path in clusters:
        _say(f"testdb: {verb} embedded cluster {path}")
    for container_id in prune_containers(dry_run=dry_run):
        _say(f"testdb: {verb} docker container {container_id[:12]}")
    info = state.server if state is not None and url is None and server is None else find_server(settings)
    if info is None:
        _say("testdb: no server to prune")
        return
    report = prune_databases(info, prefix=prefix, dry_run=dry_run, force=force, templates=templates)
    for name in report.dropped:
        sys.stdout.write(f"{name}\n")
    for row in report.busy:
        _say(f"testdb: skipped {row.name}: {row.connections} open connection(s) (use --force)")
    _say(f"testdb: {verb} {len(report.dropped)} databases of dead runs on {info.kind} server")


def _container_line(state: RunState) -> str:
    from testdb.servers import docker

    short = (state.server.container_id or "")[:12]
    for container in docker.labelled_containers():
        if container["id"].startswith(short):
            return (
                f"container: {container['name']} {container['status']} {container['ports']}"
                f" reuse={container['reuse']}"
            )
    return f"container: {short} is gone"


def main() -> None:
    """Console entry point: one error line and exit 2 instead of a traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except TestdbError as exc:
        if debug:
            raise
        _fail(exc.message, exc.hint)
    except psycopg.Error as exc:  # a server refusal testdb did not anticipate: still one line
        if debug:
            raise
        _fail(f"PostgreSQL refused: {scrub(_first_line(exc))}", _server_hint(exc))
    except TyperException as exc:  # click's usage errors, vendored by typer
        if debug:
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            sys.exit(0)
        command = ctx.command_path if ctx is not None else "testdb"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        _fail(" ".join(message.split()), f"run '{command} --help' for usage")
    except (KeyboardInterrupt, typer.Abort):
        _say("testdb: interrupted; everything this run created was removed")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _server_hint(exc: psycopg.Error) -> str:
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return "the role needs CREATEDB (and to own what testdb drops); use a role that has it"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "the server or session is read-only (a replica, or default_transaction_read_only)"
    return "run with --debug for the full error"


def _fail(message: str, hint: str) -> None:
    err.print(f"testdb: error: {message}", markup=False)
    err.print(f"hint: {hint}", markup=False)
    sys.exit(ERROR_EXIT)
