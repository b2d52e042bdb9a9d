"""The ``testdb`` command: argument parsing and output only.

Every command parses its options, calls one function of the package (mostly
:mod:`testdb.lifecycle`) and prints what it returns. Environment output goes to stdout (so
``eval "$(testdb up)"`` works); notices, progress and tables go to stderr. Errors are one
``testdb: error:`` line plus a ``hint:`` line and exit code 2; ``--debug`` shows the
traceback instead.

Only typer and rich are imported at start-up: ``--help`` and ``--version`` must feel
like a small tool's, so each command imports what it needs when it runs.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from testdb.errors import ConfigError, TestdbError, first_line

if TYPE_CHECKING:
    from rich.console import Console

    from testdb.config import Settings
    from testdb.lifecycle import Progress, StatusReport
    from testdb.prune import PruneReport
    from testdb.servers.base import ServerInfo
    from testdb.state import RunState

ERROR_EXIT = 2
OUTPUT_FORMATS = ("shell", "dotenv", "json", "github")
SERVER_CHOICES = ("auto", "url", "local", "embedded", "docker")
app = typer.Typer(
    name="testdb",
    help="Real PostgreSQL databases for parallel integration tests: one per pytest-xdist worker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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
Wait = Annotated[
    str | None, typer.Option("--wait", help="How long to wait for connections on a busy server, e.g. 10m.")
]
KeepServer = Annotated[bool, typer.Option("--keep-server", help="Keep the embedded cluster for the next up.")]


def _err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")


def _say_now(notice: str) -> None:
    _say(f"testdb: {notice}")


def _version(value: bool) -> None:
    if value:
        from testdb.entry import version_line  # the console script answers --version itself

        sys.stdout.write(version_line() + "\n")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config file (default testdb.toml).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if config is not None:
        os.environ["TESTDB_CONFIG"] = str(config)


def _settings(**options: Any) -> Settings:
    from testdb.config import load_settings, parse_duration

    server = options.get("server")
    if server is not None and server not in SERVER_CHOICES:
        raise ConfigError(
            f"unknown server kind {server!r}", hint="--server takes: " + ", ".join(SERVER_CHOICES)
        )
    if options.pop("unique", False):
        options["names"] = "unique"
    if options.pop("keep_server", False):
        options["embedded"] = {"keep": True}
    wait = options.pop("wait", None)
    if wait is not None:
        try:
            options["admission"] = {"wait": parse_duration(wait)}
        except ValueError as exc:
            raise ConfigError(f"invalid --wait: {exc}", hint="e.g. --wait 90s, --wait 10m") from None
    return load_settings(Path.cwd(), options)


def _check_format(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}", hint="--format takes: " + ", ".join(OUTPUT_FORMATS))


def _report_progress(progress: Progress, state: RunState) -> None:
    for notice in progress.notices:
        _say(f"testdb: {notice}")
    _say(f"testdb: server: {state.server.kind} ({state.server.reason})")
    _say(
        f"testdb: template {state.template} {progress.template_notice}"
        f" in {progress.timings.get('template', 0):.2f}s"
    )
    serial = f"{state.serial} + " if state.serial_created else ""
    _say(
        f"testdb: created {len(state.databases)} databases in {progress.timings.get('clones', 0):.2f}s"
        f" ({serial}{len(state.workers)} workers)"
    )


def _write_environment(env: dict[str, str], fmt: str) -> None:
    from testdb.envvars import format_environment

    sys.stdout.write(format_environment(env, fmt))


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
    wait: Wait = None,
) -> None:
    """Create the serial and per-worker databases and print their environment."""
    from testdb import lifecycle
    from testdb.runner import resolve_workers
    from testdb.signals import interrupts_raise

    _check_format(fmt)
    options = {"server": server, "url": url, "prefix": prefix, "workers": workers, "ttl": ttl}
    settings = _settings(**options, unique=unique, keep_server=keep_server, wait=wait)
    request = lifecycle.Request(resolve_workers(workers, settings.workers), settings.names == "unique")
    progress = lifecycle.Progress(notify=_say_now)
    with interrupts_raise():
        state = lifecycle.start_detached(settings, request, progress=progress)
    _report_progress(progress, state)
    _write_environment(lifecycle.environment(state, settings), fmt)


@app.command()
def env(fmt: Format = "shell") -> None:
    """Print the environment of what is up (and renew its lease)."""
    from testdb import lifecycle

    _check_format(fmt)
    _write_environment(lifecycle.current_environment(_settings()), fmt)


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
    wait: Wait = None,
) -> None:
    """Bring databases up, run COMMAND with their environment, tear everything down.

    Usage: testdb run [-n N] -- COMMAND [ARGS...]. Exits with COMMAND's exit code.
    """
    from testdb import lifecycle

    command = list(ctx.args)
    options = {"server": server, "url": url, "prefix": prefix, "workers": workers}
    settings = _settings(**options, unique=unique, keep_server=keep_server, wait=wait)
    request = lifecycle.run_request(settings, command, workers, settings.names == "unique")
    progress = lifecycle.Progress(notify=_say_now)
    outcome = lifecycle.run(
        settings,
        request,
        command,
        keep=keep,
        progress=progress,
        announce=lambda state: _report_progress(progress, state),
    )
    if keep:
        _say(
            f"testdb: kept {len(outcome.state.databases)} databases ('testdb env' prints the environment,"
            " 'testdb down' removes them)"
        )
    _print_timings(progress)
    if progress.server_lost is not None:
        _say(
            f"testdb: error: the {outcome.state.server.kind} server stopped during the run"
            f" ({progress.server_lost}); its files were removed"
        )
        _say("hint: something killed it (out of memory? a cleanup script?); rerun the tests")
        raise typer.Exit(outcome.returncode or ERROR_EXIT)
    raise typer.Exit(outcome.returncode)


def _print_timings(progress: Progress) -> None:
    from rich.table import Table

    table = Table(title="testdb timings", title_justify="left", show_edge=False)
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    labels = {
        "server": "server start",
        "template": f"template ({progress.template_notice})",
        "clones": "clones",
        "command": "test command",
        "teardown": "teardown",
    }
    for key, label in labels.items():
        if key in progress.timings:
            table.add_row(label, f"{progress.timings[key]:.2f}")
    _err().print(table)


@app.command()
def down(
    stop_server: Annotated[
        bool,
        typer.Option("--stop-server", help="Also stop a kept embedded server or reused Docker container."),
    ] = False,
    templates: DropTemplates = False,
) -> None:
    """Drop what 'up' created and stop what it started. Nothing up is not an error."""
    from testdb import lifecycle

    report = lifecycle.down(_settings(), stop_server=stop_server, templates=templates)
    if report is None:
        _say("testdb: nothing is up here")
        return
    if templates:
        _say(f"testdb: dropped {len(report.templates)} cached templates")
    stopped = " and stopped the server" if report.server_stopped else ""
    _say(f"testdb: dropped {len(report.dropped)} databases{stopped}")


@app.command()
def status(
    all_runs: Annotated[
        bool, typer.Option("--all", help="Every testdb run on the server, from any host.")
    ] = False,
    server: Server = None,
    url: UrlOpt = None,
) -> None:
    """Show the run that is up: server, databases, owner, age (passwords masked)."""
    from testdb import lifecycle

    if all_runs:
        _print_fleet(_settings(server=server, url=url), explicit=server is not None or url is not None)
        return
    settings = _settings()
    report = lifecycle.status(settings)
    if report is None:
        _say("testdb: nothing is up here")
    else:
        _print_status(report)
    _print_kept(None if report is None else report.state.server, settings)


def _print_status(report: StatusReport) -> None:
    from rich.table import Table

    from testdb.envvars import mask_url
    from testdb.state import describe_age

    state = report.state
    table = Table(title=f"testdb run {state.run_id}", title_justify="left")
    for column in ("database", "role", "exists", "connections"):
        table.add_column(column)
    for row in report.databases:
        table.add_row(row.name, row.role, "yes" if row.exists else "missing", str(row.connections))
    left = None if state.expires is None else max(0, int(state.expires - time.time())) // 60
    lease = "none" if left is None else f"expires in {left}m"
    alive = "alive" if report.alive else "dead (testdb down removes what it left)"
    _say(f"server: {state.server.kind} {mask_url(state.server.url)} ({state.server.reason})")
    _say(f"owner: run {state.run_id} ({state.owner}, pid {state.owner_pid})")
    _say(f"age: {describe_age(state.created)}   lease: {lease}   run: {alive}   template: {state.template}")
    if report.server_line:
        _say(report.server_line)
    from rich.console import Console

    Console(highlight=False).print(table)


def _print_fleet(settings: Settings, *, explicit: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from testdb.envvars import mask_url
    from testdb.fleet import fleet, fleet_server
    from testdb.state import describe_age

    info = fleet_server(settings, explicit=explicit)
    if info is None:
        _say("testdb: no server to inspect (use --url)")
        return
    seen = fleet(info)
    table = Table(title=f"testdb runs on {mask_url(info.url)}", title_justify="left")
    for column in ("run", "prefix", "owner", "pid", "started", "alive by", "reserved", "dbs", "conns"):
        table.add_column(column, no_wrap=column in ("run", "alive by"))
    for run in seen.runs:
        reserved = "waiting" if run.waiting else str(run.reserved or "-")
        started = describe_age(run.started) + " ago" if run.started else "?"
        pid = str(run.pid) if run.pid is not None else "?"
        cells = (run.prefix, run.owner, pid, started, run.liveness, reserved, str(len(run.databases)))
        table.add_row(run.run_id, *cells, str(run.connections))
    Console(highlight=False).print(table)
    _say(f"testdb: {len(seen.runs)} runs, {len(seen.templates)} cached templates")


def _print_kept(info: ServerInfo | None, settings: Settings) -> None:
    """Failed tests' databases kept for inspection (testdb_fresh_* fixtures), with their leases."""
    from testdb import lifecycle

    for db in lifecycle.kept_databases(settings, info):
        minutes = None if db.expires is None else max(0, int(db.expires - time.time())) // 60
        left = "no lease" if minutes is None else f"{minutes}m left"
        _say(f"kept (failed test): {db.url} ({left}; testdb prune drops it after)")


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
    from rich.table import Table

    from testdb import lifecycle

    reports = lifecycle.clean(_settings(url=url), url=url, worker=worker, database=database, force=force)
    table = Table(title="testdb clean", title_justify="left", show_edge=False)
    for column in ("database", "tables emptied", "rows", "ms"):
        table.add_column(column, justify="left" if column == "database" else "right")
    for name, report in reports:
        table.add_row(name, str(len(report.emptied)), str(report.rows), f"{report.seconds * 1000:.1f}")
    _err().print(table)


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
    from testdb import lifecycle

    settings = _settings(server=server, url=url)
    explicit = server is not None or url is not None
    report = lifecycle.prune(
        settings, dry_run=dry_run, force=force, templates=templates, prefix=prefix, explicit_server=explicit
    )
    _print_prune(report, dry_run)


def _print_prune(report: PruneReport, dry_run: bool) -> None:
    verb = "would drop" if dry_run else "dropped"
    for resource in report.servers:
        _say(f"testdb: {verb} {resource.label}")
    if report.server is None:
        _say("testdb: no server to prune")
        return
    for name in report.dropped:
        sys.stdout.write(f"{name}\n")
    for row in report.busy:
        _say(f"testdb: skipped {row.name}: {row.connections} open connection(s) (use --force)")
    for row in report.not_owned:
        _say(f"testdb: skipped {row.name}: owned by another role (only its owner or a superuser may drop it)")
    _say(f"testdb: {verb} {len(report.dropped)} databases of dead runs on {report.server.kind} server")


template_app = typer.Typer(help="The cached schema template as a CI cache artifact.", no_args_is_help=True)
app.add_typer(template_app, name="template")
DumpFile = Annotated[Path, typer.Argument(help="A dump (pg_dump -Fc), or a folder of dumps named by key.")]


@template_app.command("export")
def template_export(file: DumpFile, prefix: Prefix = None, server: Server = None, url: UrlOpt = None) -> None:
    """Dump this checkout's template (built first if missing) to FILE."""
    from testdb.template_io import export_template

    done = export_template(_settings(prefix=prefix, server=server, url=url), Path.cwd(), file)
    _say(f"testdb: template {done.template} ({done.notice}) exported to {done.path} in {done.seconds:.2f}s")


@template_app.command("import")
def template_import(file: DumpFile, prefix: Prefix = None, server: Server = None, url: UrlOpt = None) -> None:
    """Restore FILE as this checkout's cached template (refused if its key or major version differ)."""
    from testdb.template_io import import_template

    done = import_template(_settings(prefix=prefix, server=server, url=url), Path.cwd(), file)
    _say(f"testdb: template {done.template} {done.notice} in {done.seconds:.2f}s")


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Click's usage-error class: vendored by newer typer, a dependency of older ones."""
    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def main() -> None:
    """Console entry point: one error line and exit 2 instead of a traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        _say("testdb: interrupted; everything this run created was removed")
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        _fail(*_explain(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _explain(exc: Exception) -> tuple[str, str]:
    """One line and a hint for any failure that reaches the entry point."""
    if isinstance(exc, TestdbError):
        return exc.message, exc.hint
    if isinstance(exc, _usage_errors()):
        return _usage(exc)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        # A server refusal testdb did not anticipate: still one line.
        from testdb.servers.base import scrub

        return f"PostgreSQL refused: {scrub(first_line(exc))}", _server_hint(exc)
    raise exc


def _usage(exc: BaseException) -> tuple[str, str]:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        # typer's rich help is printed while the error is made (its text is then empty)
        text = exc.format_message() if hasattr(exc, "format_message") else ""
        if text.strip():
            sys.stdout.write(text + "\n")
        sys.exit(0)
    command = ctx.command_path if ctx is not None else "testdb"
    format_message = getattr(exc, "format_message", None)
    message = format_message() if format_message is not None else str(exc)
    return " ".join(message.split()), f"run '{command} --help' for usage"


def _server_hint(exc: Exception) -> str:
    import psycopg

    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        if "must be owner" in str(exc):
            return "only the owner of that object (or a superuser) may do that: connect as its owner"
        return "the role needs CREATEDB (and to own what testdb drops); use a role that has it"
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return "the server or session is read-only (a replica, or default_transaction_read_only)"
    return "run with --debug for the full error"


def _fail(message: str, hint: str) -> None:
    _say(f"testdb: error: {message}")
    _say(f"hint: {hint}")
    sys.exit(ERROR_EXIT)
