"""Fail if importing the pytest plugin imports a CLI-only dependency.

The plugin is loaded by every pytest run in a venv that has testdb installed: a broken or
too-old typer, rich or docker must never break a user's pytest.
"""

from __future__ import annotations

import sys

CLI_ONLY = ("typer", "click", "rich", "docker")

import testdb.pytest_plugin  # noqa: E402,F401 - the import under test

loaded = sorted(name for name in sys.modules if name.split(".")[0] in CLI_ONLY)
if loaded:
    sys.exit(f"importing testdb.pytest_plugin imported CLI-only modules: {', '.join(loaded)}")
