"""Template export/import: a dump of this checkout's template restores as its cache; others are refused."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from _alembic_project import AlembicProject
from testdb.config import Settings
from testdb.errors import SchemaError
from testdb.ownership import Marker, list_databases
from testdb.provision import drop_database
from testdb.servers.base import ServerInfo, admin_connection
from testdb.template import ensure_template
from testdb.template_io import export_from, import_into


def _env(info: ServerInfo, database: str) -> Mapping[str, str]:
    return {}


@pytest.fixture
def project(tmp_path: Path) -> AlembicProject:
    project = AlembicProject(tmp_path / "app")
    project.add_table("a")
    project.add_table("b")
    return project


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(schema={"alembic": "alembic.ini"})


def _drop_templates(info: ServerInfo, prefix: str) -> None:
    with admin_connection(info) as conn:
        for row in list_databases(conn):
            if row.name.startswith(prefix + "_tpl_") and row.marker is not None:
                drop_database(conn, row.name)


def test_an_imported_dump_is_the_cached_template_of_the_same_checkout(
    pg_server: ServerInfo, prefix: str, settings: Settings, project: AlembicProject, tmp_path: Path
) -> None:
    dump = tmp_path / "template.dump"
    exported = export_from(pg_server, prefix, settings, project.root, _env, dump)
    _drop_templates(pg_server, prefix)
    imported = import_into(pg_server, prefix, settings, project.root, _env, dump)
    assert (imported.template, imported.notice) == (exported.template, "imported from template.dump")
    marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, None)
    assert ensure_template(pg_server, prefix, settings.schema, marker, project.root, _env).notice == "reused"


def test_an_imported_template_is_extended_by_a_new_revision(
    pg_server: ServerInfo, prefix: str, settings: Settings, project: AlembicProject, tmp_path: Path
) -> None:
    dump = tmp_path / "template.dump"
    exported = export_from(pg_server, prefix, settings, project.root, _env, dump)
    _drop_templates(pg_server, prefix)
    import_into(pg_server, prefix, settings, project.root, _env, dump)
    project.add_table("c")
    marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, None)
    result = ensure_template(pg_server, prefix, settings.schema, marker, project.root, _env)
    assert result.notice == f"extended from {exported.template} (+1 revisions)"


def test_a_dump_of_another_schema_is_refused_in_one_line(
    pg_server: ServerInfo, prefix: str, settings: Settings, project: AlembicProject, tmp_path: Path
) -> None:
    dump = tmp_path / "template.dump"
    exported = export_from(pg_server, prefix, settings, project.root, _env, dump)
    project.add_table("c")
    with pytest.raises(SchemaError) as refused:
        import_into(pg_server, prefix, settings, project.root, _env, dump)
    key = exported.template.rsplit("_", 1)[1]
    assert f"holds template {key} of PostgreSQL" in refused.value.message
    assert "\n" not in refused.value.message


def test_a_file_that_is_not_a_dump_is_refused(
    pg_server: ServerInfo, prefix: str, settings: Settings, project: AlembicProject, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.dump"
    junk.write_text("not a dump")
    with pytest.raises(SchemaError, match="not a pg_dump custom-format archive"):
        import_into(pg_server, prefix, settings, project.root, _env, junk)


def test_a_folder_holds_dumps_named_by_their_key(
    pg_server: ServerInfo, prefix: str, settings: Settings, project: AlembicProject, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    exported = export_from(pg_server, prefix, settings, project.root, _env, cache)
    assert exported.path.name == f"testdb-template-{exported.template.rsplit('_', 1)[1]}.dump"
    _drop_templates(pg_server, prefix)
    assert import_into(pg_server, prefix, settings, project.root, _env, cache).template == exported.template


def test_a_folder_without_this_checkouts_dump_is_refused(
    pg_server: ServerInfo, prefix: str, settings: Settings, project: AlembicProject, tmp_path: Path
) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        import_into(pg_server, prefix, settings, project.root, _env, tmp_path)
