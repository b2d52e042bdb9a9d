"""Fail if the pytest plugin's imports load a CLI-only dependency.

The plugin is loaded by every pytest run in a venv that has testdb installed: a broken or
too-old typer, rich or docker must never break a user's pytest. Checked: the idle plugin,
and what it imports when it provisions or points a worker at its database.
"""

from __future__ import annotations

import importlib
import sys

CLI_ONLY = ("typer", "click", "rich", "docker")
PLUGIN_PATH = ("testdb.pytest_plugin", "testdb.fixtures", "testdb.lifecycle", "testdb.worker")

for module in PLUGIN_PATH:
    importlib.import_module(module)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in CLI_ONLY)
if loaded:
    sys.exit(f"the pytest plugin's imports loaded CLI-only modules: {', '.join(loaded)}")
