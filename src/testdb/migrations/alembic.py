"""Alembic: the chain is the revision graph read with Alembic's own ``ScriptDirectory``.

The chain lists every revision from base to the heads in upgrade order, each with the
digest of its file; ``__pycache__`` and other generated files are never read, since only
the revision files Alembic resolves count. The upgrade is ``schema.command`` when set
(projects that wrap Alembic in their own CLI), else ``alembic upgrade heads`` in a child
process with ``sqlalchemy.url`` set to the database being upgraded.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from testdb.config import SchemaSettings
from testdb.errors import SchemaError
from testdb.migrations import Chain, Upgrade
from testdb.migrations._process import run_tool
from testdb.servers.base import scrub

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

DIGEST_LEN = 16
FORK = sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()

URL_VAR = "TESTDB_ALEMBIC_URL"  # the URL reaches the child in its environment, never in argv
OUTPUT_TAIL_LINES = 5


def upgrade_here(ini: str, locations: list[str]) -> None:
    """``alembic upgrade heads`` on the database in ``$TESTDB_ALEMBIC_URL`` (in a child process)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(ini)
    cfg.set_main_option("sqlalchemy.url", os.environ[URL_VAR].replace("%", "%%"))
    if locations:
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", os.pathsep.join(locations))
    command.upgrade(cfg, "heads")


def _forked_upgrade(
    ini: str, locations: list[str], env: Mapping[str, str], cwd: Path, log_fd: int, script: ScriptDirectory
) -> None:
    from alembic.script import ScriptDirectory

    os.dup2(log_fd, 1)  # env.py's logging and prints go to the log we show on failure
    os.dup2(log_fd, 2)
    os.environ.update(env)
    os.chdir(cwd)
    # In this child only: the revision graph the parent parsed a moment ago for the key,
    # instead of executing every revision file again (most of an extension's time).
    ScriptDirectory.from_config = staticmethod(lambda *args, **kwargs: script)  # type: ignore[method-assign]
    upgrade_here(ini, locations)


def _run_forked(
    ini: str, locations: list[str], env: Mapping[str, str], cwd: Path, script: ScriptDirectory
) -> None:
    """A forked child: env.py's side effects (logging config, app imports, environment) stay
    out of this process, and the child starts with Alembic, SQLAlchemy and the parsed
    revision graph already in memory (a fresh interpreter spends longer importing them
    than one revision takes to apply)."""
    with tempfile.TemporaryFile() as log:
        child = multiprocessing.get_context("fork").Process(
            target=_forked_upgrade, args=(ini, locations, env, cwd, log.fileno(), script)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            log.seek(0)
            lines = log.read().decode(errors="replace").strip().splitlines()[-OUTPUT_TAIL_LINES:]
            tail = " | ".join(line.strip() for line in lines) or "(no output)"
            raise SchemaError(f"alembic upgrade heads exited with {child.exitcode}: {scrub(tail)}")


def _file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:DIGEST_LEN]


def version_locations(schema: SchemaSettings, root: Path) -> list[str]:
    """The user-named version folders (globs allowed), absolute, in a stable order."""
    found: list[str] = []
    for pattern in schema.alembic_version_locations:
        matches = sorted(p for p in root.glob(pattern) if p.is_dir())
        if not matches:
            raise SchemaError(
                f"alembic version location {pattern} matches no folder",
                hint="fix schema.alembic_version_locations",
            )
        found.extend(str(p.resolve()) for p in matches)
    return found


def _config(schema: SchemaSettings, root: Path) -> Config:
    from alembic.config import Config

    assert schema.alembic is not None
    ini = root / schema.alembic
    if not ini.is_file():
        raise SchemaError(f"alembic config {schema.alembic} does not exist", hint="fix schema.alembic")
    cfg = Config(str(ini))
    location = cfg.get_main_option("script_location")
    if location is None:
        raise SchemaError(f"{schema.alembic} has no script_location", hint="is it an alembic.ini?")
    # Relative to the project, as the alembic CLI run there would read it (not to our cwd).
    if ":" not in location and not Path(location).is_absolute():
        cfg.set_main_option("script_location", str(root / location))
    return cfg


def script_directory(schema: SchemaSettings, root: Path) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config(schema, root))
    locations = version_locations(schema, root)
    return ScriptDirectory(script.dir, version_locations=locations) if locations else script


def revisions(script: ScriptDirectory) -> tuple[str, ...]:
    """``"revision:digest"`` from base to heads, in the order ``upgrade`` applies them."""
    from alembic.util import CommandError

    try:
        scripts = list(script.walk_revisions("base", "heads"))
    except CommandError as exc:
        raise SchemaError(f"cannot read the alembic revision graph: {exc}", hint="alembic heads") from None
    return tuple(f"{s.revision}:{_file_digest(s.path)}" for s in reversed(scripts))


def load_chain(schema: SchemaSettings, root: Path) -> Chain:
    script = script_directory(schema, root)
    assert schema.alembic is not None
    base = hashlib.sha256()
    for path in (root / schema.alembic, Path(script.env_py_location)):
        base.update(_file_digest(path).encode())
    base.update((schema.command or "alembic upgrade heads").encode())
    return Chain("alembic", base.hexdigest()[:DIGEST_LEN], revisions(script), _upgrader(schema, root, script))


def _upgrader(schema: SchemaSettings, root: Path, script: ScriptDirectory) -> Upgrade:
    command, ini = schema.command, str(root / (schema.alembic or ""))
    locations = version_locations(schema, root)

    def upgrade(url: str, env: Mapping[str, str], cwd: Path) -> None:
        if command:
            run_tool(command, env, cwd, f"schema command {command!r}")
        elif FORK:
            import alembic.command  # noqa: F401 - imported once here, inherited by every fork

            _run_forked(ini, locations, {**env, URL_VAR: url}, cwd, script)
        else:
            code = f"from {__name__} import upgrade_here; import sys; upgrade_here(sys.argv[1], sys.argv[2:])"
            run_tool(
                [sys.executable, "-c", code, ini, *locations],
                {**env, URL_VAR: url},
                cwd,
                "alembic upgrade heads",
            )

    return upgrade
