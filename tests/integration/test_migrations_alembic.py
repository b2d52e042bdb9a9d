"""Alembic templates: keyed by the revision chain, extended instead of rebuilt, kept LRU."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from psycopg import sql

from _alembic_project import AlembicProject
from testdb.config import SchemaSettings
from testdb.errors import SchemaError
from testdb.ownership import Marker, list_databases, set_marker
from testdb.servers.base import ServerInfo, admin_connection, connect
from testdb.template import TemplateHold, TemplateResult, ensure_template

Ensure = Callable[..., TemplateResult]


@pytest.fixture
def project(tmp_path: Path) -> AlembicProject:
    return AlembicProject(tmp_path)


def _env(info: ServerInfo, database: str) -> Mapping[str, str]:
    return {"DATABASE_URL": info.database_url(database).render_as_string(hide_password=False)}


@pytest.fixture
def ensure(pg_server: ServerInfo, prefix: str, project: AlembicProject) -> Ensure:
    """ensure_template for the project, as one run of this test's prefix would call it."""

    def run(keep: int = 5, **schema: object) -> TemplateResult:
        settings = SchemaSettings(alembic="alembic.ini", keep_templates=keep, **schema)  # type: ignore[arg-type]
        marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, None)
        return ensure_template(pg_server, prefix, settings, marker, project.root, _env)

    return run


def _tables(info: ServerInfo, template: str) -> set[str]:
    """Tables a clone of ``template`` has (templates refuse connections: look at a clone)."""
    clone = f"{template}_look"
    with admin_connection(info) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(clone), sql.Identifier(template))
        )
    try:
        with connect(info.database_url(clone)) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        return {r[0] for r in rows}
    finally:
        with admin_connection(info) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(clone)))


def _templates(info: ServerInfo, prefix: str) -> set[str]:
    with admin_connection(info) as conn:
        return {r.name for r in list_databases(conn) if r.name.startswith(prefix + "_tpl_")}


def test_a_first_run_builds_and_the_next_reuses(ensure: Ensure, project: AlembicProject) -> None:
    project.add_table("a")
    first, second = ensure(), ensure()
    assert (first.notice, second.notice) == ("built", "reused")
    assert first.name == second.name


def test_a_new_revision_extends_the_cached_template(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo
) -> None:
    project.add_table("a")
    older = ensure()
    project.add_table("b")
    project.add_table("c")
    newer = ensure()
    assert newer.notice == f"extended from {older.name} (+2 revisions)"
    assert _tables(pg_server, newer.name) == {"a", "b", "c", "alembic_version"}


def test_the_extension_leaves_the_older_template_unchanged(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo
) -> None:
    project.add_table("a")
    older = ensure()
    project.add_table("b")
    ensure()
    assert _tables(pg_server, older.name) == {"a", "alembic_version"}


def test_an_edited_applied_revision_is_a_full_build_that_says_why(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo
) -> None:
    first = project.add_table("a")
    older = ensure()
    project.path(first).write_text(project.path(first).read_text().replace("TABLE a", "TABLE a2"))
    project.add_table("b")
    result = ensure()
    assert result.notice == f"built (revision {first} was edited after {older.name} applied it)"
    assert _tables(pg_server, result.name) == {"a2", "b", "alembic_version"}


def test_a_graph_that_is_not_an_extension_is_a_full_build_that_says_why(
    ensure: Ensure, project: AlembicProject
) -> None:
    root = project.add_table("a")
    project.add_table("b")
    older = ensure()
    project.remove("r0002")
    project.add_table("c", down=root)
    result = ensure()
    assert result.notice == f"built ({older.name} has revision r0002, which is not in the current graph)"


def test_switching_branches_back_and_forth_builds_nothing(ensure: Ensure, project: AlembicProject) -> None:
    root = project.add_table("a")
    branch_a = project.add_table("b")
    ensure()
    project.remove(branch_a)
    project.add_table("c", down=root)
    ensure()
    project.remove("r0003")
    project.add_table("b", down=root, name=branch_a)
    assert ensure().notice == "reused"


def test_generated_files_do_not_change_the_key(ensure: Ensure, project: AlembicProject) -> None:
    project.add_table("a")
    first = ensure()
    cache = project.versions / "__pycache__"
    cache.mkdir()
    (cache / "r0001.cpython-311.pyc").write_bytes(b"\0junk")
    (project.versions / "notes.txt").write_text("not a revision")
    assert ensure().name == first.name


def test_a_revision_in_an_autocommit_block_can_create_an_index_concurrently(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo
) -> None:
    project.add_table("a")
    ensure()
    project.add(
        "with op.get_context().autocommit_block():\n"
        '    op.execute("CREATE INDEX CONCURRENTLY a_id_idx ON a (id)")'
    )
    result = ensure()
    assert result.extended
    assert _tables(pg_server, result.name) >= {"a"}


def test_the_upgrade_runs_schema_command_with_the_env_it_is_given(
    pg_server: ServerInfo, prefix: str, project: AlembicProject
) -> None:
    env_py = project.root / "migrations" / "env.py"  # like a project CLI: the URL from its own variable
    env_py.write_text(
        env_py.read_text().replace('context.config.get_main_option("sqlalchemy.url")', 'os.environ["APP_DB"]')
    )
    env_py.write_text("import os\n" + env_py.read_text())
    schema = SchemaSettings(alembic="alembic.ini", command=f"{sys.executable} -m alembic upgrade heads")

    def env(info: ServerInfo, database: str) -> Mapping[str, str]:
        return {
            "APP_DB": info.database_url(database).set(drivername="postgresql+psycopg").render_as_string(False)
        }

    def run() -> TemplateResult:
        marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, None)
        return ensure_template(pg_server, prefix, schema, marker, project.root, env)

    project.add_table("a")
    run()
    project.add_table("b")
    result = run()
    assert result.extended
    assert _tables(pg_server, result.name) == {"a", "b", "alembic_version"}


def test_a_failing_revision_leaves_no_template_behind(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo, prefix: str
) -> None:
    project.add_table("a")
    older = ensure()
    project.add('op.execute("CREATE TABLE broken (")')
    with pytest.raises(SchemaError, match="alembic upgrade heads exited"):
        ensure()
    assert _templates(pg_server, prefix) == {older.name}


def test_the_least_recently_used_templates_beyond_keep_are_dropped(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo, prefix: str
) -> None:
    root = project.add_table("a")
    first = ensure(keep=2)
    project.add_table("b")
    second = ensure(keep=2)
    project.remove("r0002")
    project.add_table("b", down=root, name="r0002")
    time.sleep(0.01)
    assert ensure(keep=2).name == second.name  # used again: now the most recent
    project.add_table("c")
    third = ensure(keep=2)
    assert _templates(pg_server, prefix) == {second.name, third.name}
    assert first.name not in _templates(pg_server, prefix)


def test_a_template_a_live_run_cloned_from_is_kept(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo, prefix: str
) -> None:
    project.add_table("a")
    older = ensure(keep=1)
    with admin_connection(pg_server) as conn:  # a live (leased) run's database made from it
        name = f"{prefix}_gw0"
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, ttl=600)
        marker.template = older.name
        set_marker(conn, name, marker)
    project.add_table("b")
    ensure(keep=1)
    assert older.name in _templates(pg_server, prefix)


def test_a_template_a_run_is_cloning_from_is_kept(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo, prefix: str
) -> None:
    project.add_table("a")
    older = ensure(keep=1)
    with TemplateHold(pg_server) as hold:
        hold.take(older.name)
        project.add_table("b")
        ensure(keep=1)
        assert older.name in _templates(pg_server, prefix)


def test_user_named_version_locations_are_read_and_applied(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo
) -> None:
    plugin = project.root / "plugins" / "billing" / "versions"
    plugin.mkdir(parents=True)
    project.add_table("a")
    project.add_table("billing")
    project.path("r0002").rename(plugin / "r0002.py")
    result = ensure(alembic_version_locations=["migrations/versions", "plugins/*/versions"])
    assert _tables(pg_server, result.name) == {"a", "billing", "alembic_version"}


def test_a_version_location_that_matches_nothing_is_refused(ensure: Ensure, project: AlembicProject) -> None:
    project.add_table("a")
    with pytest.raises(SchemaError, match="matches no folder"):
        ensure(alembic_version_locations=["nowhere/versions"])


def test_without_fork_the_upgrade_runs_in_a_fresh_interpreter(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from testdb.migrations import alembic

    monkeypatch.setattr(alembic, "FORK", False)
    project.add_table("a")
    ensure()
    project.add_table("b")
    result = ensure()
    assert result.extended
    assert _tables(pg_server, result.name) == {"a", "b", "alembic_version"}


def test_a_changed_sql_source_beside_the_migrations_builds_instead_of_extending(
    ensure: Ensure, project: AlembicProject, pg_server: ServerInfo
) -> None:
    (project.root / "extra.sql").write_text("CREATE TABLE extra_one (id int);")
    project.add_table("a")
    ensure(sql=["extra.sql"])
    (project.root / "extra.sql").write_text("CREATE TABLE extra_two (id int);")
    project.add_table("b")
    result = ensure(sql=["extra.sql"])
    assert result.notice == "built"
    assert _tables(pg_server, result.name) >= {"extra_two", "a", "b"}
    assert "extra_one" not in _tables(pg_server, result.name)
