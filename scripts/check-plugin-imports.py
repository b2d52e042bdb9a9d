"""Fail if importing the pytest plugin imports a CLI-only dependency.

The plugin is loaded by every pytest run in a venv that has testdb installed: a broken or
too-old typer, rich or docker must never break a user's pytest.
"""

from __future__ import annotations

import sys

CLI_ONLY = ("typer", "click", "rich", "docker")

import testdb.pytest_plugin  # noqa: E402,F401 - the import under test

# ... and what the plugin imports when it provisions or points a worker at its database.
import testdb.lifecycle  # noqa: E402,F401
import testdb.worker  # noqa: E402,F401

loaded = sorted(name for name in sys.modules if name.split(".")[0] in CLI_ONLY)
if loaded:
    sys.exit(f"the pytest plugin's imports loaded CLI-only modules: {', '.join(loaded)}")
