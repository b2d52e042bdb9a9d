"""Alembic: the chain is the revision graph read with Alembic's own ``ScriptDirectory``.

The chain lists every revision from base to the heads in upgrade order, each with the
digest of its file; ``__pycache__`` and other generated files are never read, since only
the revision files Alembic resolves count. The upgrade is ``schema.command`` when set
(projects that wrap Alembic in their own CLI), else ``alembic upgrade heads`` in a child
process with ``sqlalchemy.url`` set to the database being upgraded.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from testdb.config import SchemaSettings
from testdb.errors import SchemaError
from testdb.migrations import Chain, Upgrade
from testdb.migrations._process import run_tool

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

DIGEST_LEN = 16

# Runs in the child: the same Config as load_chain, pointed at the database, then upgrade.
_UPGRADE = """
import os, sys
from alembic import command
from alembic.config import Config
ini, *locations = sys.argv[1:]
cfg = Config(ini)
cfg.set_main_option("sqlalchemy.url", os.environ["TESTDB_ALEMBIC_URL"].replace("%", "%%"))
if locations:
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations))
command.upgrade(cfg, "heads")
"""


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


def revisions(schema: SchemaSettings, root: Path) -> tuple[str, ...]:
    """``"revision:digest"`` from base to heads, in the order ``upgrade`` applies them."""
    from alembic.util import CommandError

    try:
        scripts = list(script_directory(schema, root).walk_revisions("base", "heads"))
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
    return Chain("alembic", base.hexdigest()[:DIGEST_LEN], revisions(schema, root), _upgrader(schema, root))


def _upgrader(schema: SchemaSettings, root: Path) -> Upgrade:
    command, ini = schema.command, str(root / (schema.alembic or ""))
    locations = version_locations(schema, root)

    def upgrade(url: str, env: Mapping[str, str], cwd: Path) -> None:
        if command:
            run_tool(command, env, cwd, f"schema command {command!r}")
            return
        argv = [sys.executable, "-c", _UPGRADE, ini, *locations]  # the URL (a secret) not in argv
        run_tool(argv, {**env, "TESTDB_ALEMBIC_URL": url}, cwd, "alembic upgrade heads")

    return upgrade
