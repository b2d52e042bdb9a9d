"""Runs in a child process with the project's Django settings (see testdb.migrations.django).

``plan``: print the migration graph as JSON (one line). ``build``: point the default
database at ``TESTDB_DJANGO_DATABASE`` and make what Django's test-database creation makes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

DIGEST_LEN = 16
TARGET_VAR = "TESTDB_DJANGO_DATABASE"


def _digest(path: str | None) -> str:
    if not path:
        return "-"
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:DIGEST_LEN]


def _ordered_nodes(graph: Any) -> list[tuple[str, str]]:
    """Every node, dependencies first: the order ``migrate`` applies them in."""
    nodes: dict[tuple[str, str], None] = {}
    for leaf in graph.leaf_nodes():
        nodes.update(dict.fromkeys(graph.forwards_plan(leaf)))
    return list(nodes)


def plan() -> dict[str, Any]:
    import django
    from django.apps import apps
    from django.conf import settings
    from django.db.migrations.loader import MigrationLoader

    django.setup()
    loader = MigrationLoader(None, ignore_no_migrations=True)
    revisions = []
    for app, name in _ordered_nodes(loader.graph):
        module = sys.modules[type(loader.graph.nodes[app, name]).__module__]
        revisions.append(f"{app}.{name}:{_digest(getattr(module, '__file__', None))}")
    unmigrated = {  # apps without migrations get tables from their models (run_syncdb)
        label: _digest(getattr(apps.get_app_config(label).models_module, "__file__", None))
        for label in sorted(loader.unmigrated_apps)
    }
    caches = sorted(
        str(c.get("LOCATION")) for c in settings.CACHES.values() if c["BACKEND"].endswith("DatabaseCache")
    )
    base = [settings.DATABASES["default"]["ENGINE"], unmigrated, caches]
    return {"revisions": revisions, "base": base}


def build() -> None:
    from django.conf import settings

    settings.DATABASES["default"].update(json.loads(os.environ[TARGET_VAR]))
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    # What django.db.backends.base.creation.create_test_db does, minus creating the database.
    call_command("migrate", verbosity=0, interactive=False, database="default", run_syncdb=True)
    call_command("createcachetable", database="default")
    connections.close_all()


if __name__ == "__main__":
    if sys.argv[1:] == ["plan"]:
        print(json.dumps(plan()))
    elif sys.argv[1:] == ["build"]:
        build()
    else:
        sys.exit("usage: python -m testdb.migrations._django_child plan|build")
