"""Finding and reading the config file, with nothing but the standard library.

Kept apart from :mod:`testdb.config` (pydantic-settings) so that the idle pytest plugin can
ask "is provisioning switched on?" without importing pydantic.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from testdb.errors import ConfigError

CONFIG_FILE = "testdb.toml"
PYPROJECT = "pyproject.toml"
ENV_PREFIX = "TESTDB_"


def find_config_file(cwd: Path) -> Path | None:
    """``testdb.toml`` if present, else ``pyproject.toml`` if it has a [tool.testdb] table.

    ``TESTDB_CONFIG`` names a file explicitly.
    """
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {explicit} (from TESTDB_CONFIG) does not exist")
        return path
    candidate = cwd / CONFIG_FILE
    if candidate.is_file():
        return candidate
    pyproject = cwd / PYPROJECT
    if pyproject.is_file() and "testdb" in read_toml(pyproject).get("tool", {}):
        return pyproject
    return None


def read_config_table(path: Path) -> dict[str, Any]:
    """The testdb table of a config file: the whole of testdb.toml, [tool.testdb] of pyproject."""
    data = read_toml(path)
    if path.name == PYPROJECT:
        table = data.get("tool", {}).get("testdb", {})
        return table if isinstance(table, dict) else {}
    return data


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
