"""`testdb down --templates`: nothing of the prefix is left, the cache included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from ._cli import Cli
from ._db import database_names


def test_down_keeps_the_template_cache_by_default(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    assert cli("up", "-n", "1", "--server", "local", "--prefix", prefix).code == 0
    assert cli("down").code == 0
    left = {name for name in database_names(admin) if name.startswith(prefix)}
    assert len(left) == 1
    assert next(iter(left)).startswith(f"{prefix}_tpl_")


def test_down_with_templates_leaves_nothing_of_the_prefix(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    assert cli("up", "-n", "2", "--server", "local", "--prefix", prefix).code == 0
    result = cli("down", "--templates")
    assert result.code == 0, result.err
    assert "dropped 1 cached templates" in result.err
    assert not {name for name in database_names(admin) if name.startswith(prefix)}
