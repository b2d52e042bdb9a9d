"""`testdb template export/import`: a CI cache artifact of the template, refused when stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from _alembic_project import AlembicProject

from ._cli import Cli
from ._db import database_names, drop_prefixed


@pytest.fixture
def project(tmp_path: Path, prefix: str) -> AlembicProject:
    project = AlembicProject(tmp_path)
    (tmp_path / "testdb.toml").write_text(
        f'prefix = "{prefix}"\nserver = "local"\n[schema]\nalembic = "alembic.ini"\n'
    )
    project.add_table("a")
    return project


def test_an_exported_template_imports_as_the_cache_and_the_next_run_reuses_it(
    cli: Cli, project: AlembicProject, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    exported = cli("template", "export", "t.dump")
    assert exported.code == 0, exported.err
    drop_prefixed(admin, prefix)
    imported = cli("template", "import", "t.dump")
    assert imported.code == 0, imported.err
    assert "imported from t.dump" in imported.err
    up = cli("up", "-n", "1")
    assert up.code == 0, up.err
    assert "reused" in up.err
    assert cli("down").code == 0


def test_a_new_revision_reports_the_extension(
    cli: Cli, project: AlembicProject, admin: psycopg.Connection[Any], prefix: str
) -> None:
    assert cli("template", "export", "t.dump").code == 0
    project.add_table("b")
    up = cli("up", "-n", "1")
    assert up.code == 0, up.err
    assert "extended from" in up.err and "(+1 revisions)" in up.err
    assert cli("down").code == 0


def test_a_stale_dump_is_refused_with_one_error_line_and_exit_2(
    cli: Cli, project: AlembicProject, admin: psycopg.Connection[Any], prefix: str
) -> None:
    assert cli("template", "export", "t.dump").code == 0
    project.add_table("b")
    before = {name for name in database_names(admin) if name.startswith(prefix)}
    result = cli("template", "import", "t.dump")
    assert result.code == 2
    assert "holds template" in result.error
    assert len(result.lines("hint:")) == 1
    assert "Traceback" not in result.err
    assert {name for name in database_names(admin) if name.startswith(prefix)} == before
