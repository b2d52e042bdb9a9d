"""The ``testdb`` console script: answers ``--version`` before importing the CLI.

``testdb --version`` must stay instant and must work even where a heavy dependency is
broken (it is what a bug report asks for first), so it reads the installed distribution's
metadata and imports nothing else; every other command goes to :mod:`testdb.cli`.
"""

from __future__ import annotations

import sys
from importlib import metadata

DISTRIBUTION = "pytest-testdb"


def version() -> str:
    """The installed distribution's version (``unknown`` when run from an uninstalled tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def version_line() -> str:
    return f"testdb {version()}"


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        sys.stdout.write(version_line() + "\n")
        sys.exit(0)
    from testdb.cli import main as cli_main

    cli_main()
