"""Django: the chain is the migration graph (``MigrationLoader``), read in a child process.

The template holds everything Django's own test-database creation makes: ``migrate`` with
``run_syncdb`` (data migrations' rows and sequences exactly as after migrate) and
``createcachetable``. Both run in a child with the project's settings and ``DATABASES``'s
default pointed at the template, so the settings never load in the process running tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from testdb.config import SchemaSettings
from testdb.errors import SchemaError
from testdb.migrations import Chain
from testdb.migrations._django_child import TARGET_VAR
from testdb.migrations._process import run_tool
from testdb.urls import make_url

CHILD = "testdb.migrations._django_child"


def settings_module(schema: SchemaSettings) -> str:
    """``schema.django``, or ``DJANGO_SETTINGS_MODULE`` when it says ``"env"``."""
    if schema.django and schema.django != "env":
        return schema.django
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        raise SchemaError(
            'schema.django = "env" but DJANGO_SETTINGS_MODULE is not set',
            hint="export DJANGO_SETTINGS_MODULE or name the settings module in [schema] django",
        )
    return module


def child_env(module: str, root: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The project's root (and ``src/``) importable, as ``manage.py`` run there would have it."""
    paths = [str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")]
    return {**env, "DJANGO_SETTINGS_MODULE": module, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def database_settings(url: str) -> dict[str, str]:
    """``DATABASES['default']`` fields for ``url`` (passed in the environment: no password in argv)."""
    parsed = make_url(url)
    return {
        "NAME": parsed.database or "",
        "HOST": parsed.host or parsed.query.get("host", ""),  # a socket directory: Django passes it on
        "PORT": str(parsed.port or ""),
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
    }


def load_chain(schema: SchemaSettings, root: Path, env: Mapping[str, str]) -> Chain:
    module = settings_module(schema)
    out = run_tool(
        [sys.executable, "-m", CHILD, "plan"], child_env(module, root, env), root, "reading Django migrations"
    )
    data = json.loads(out.strip().splitlines()[-1])
    base = hashlib.sha256(json.dumps([module, data["base"]]).encode()).hexdigest()[:16]

    def upgrade(url: str, env: Mapping[str, str], cwd: Path) -> None:
        target = {**child_env(module, root, env), TARGET_VAR: json.dumps(database_settings(url))}
        run_tool([sys.executable, "-m", CHILD, "build"], target, cwd, "Django migrate")

    return Chain("django", base, tuple(data["revisions"]), upgrade)
