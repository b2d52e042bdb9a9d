"""The environment of the commands testdb starts: testdb's own bin directory first on PATH.

``.venv/bin/testdb run -- pytest`` without an activated virtualenv, or
``schema.command = "alembic upgrade head"``, should find the executables installed next to
testdb, as ``uv run``, ``tox`` and ``hatch run`` arrange. The directory is the one holding
the interpreter testdb runs on (a virtualenv's ``bin``). It is left out when it is already
on PATH, when the user activated another virtualenv (``VIRTUAL_ENV``: the activated one
must win), and when testdb's environment has no pytest: that is a tool install (pipx,
``uv tool``) holding only the CLI, whose ``python`` must not shadow the project's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path


def own_bin_dir() -> Path:
    """The directory of testdb's interpreter (not resolved: a venv's python is a symlink)."""
    return Path(sys.executable).parent


def _activated_elsewhere(environ: Mapping[str, str]) -> bool:
    active = environ.get("VIRTUAL_ENV")
    if not active:
        return False
    return Path(active).absolute() != Path(sys.prefix).absolute()


def is_project_environment() -> bool:
    """Whether testdb's environment is a project's (it has pytest), not a CLI-only tool's."""
    return importlib.util.find_spec("pytest") is not None


def child_path(environ: Mapping[str, str]) -> str:
    """PATH for a child: ``environ``'s, with testdb's bin directory first unless already there."""
    path = environ.get("PATH", os.defpath)
    own = str(own_bin_dir())
    entries = [entry.rstrip(os.sep) or os.sep for entry in path.split(os.pathsep)]
    if own in entries or _activated_elsewhere(environ) or not is_project_environment():
        return path
    return os.pathsep.join([own, path]) if path else own


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """``os.environ`` overlaid with ``extra``, PATH as :func:`child_path` makes it."""
    env = {**os.environ, **extra}
    env["PATH"] = child_path(env)
    return env
