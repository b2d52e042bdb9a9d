"""The schema template: built once, cloned per worker, cached across runs."""

from __future__ import annotations

import re
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from testdb import lifecycle
from testdb.config import Settings
from testdb.errors import SchemaError
from testdb.state import RunState

SCHEMA = """
CREATE TYPE risk AS ENUM ('low', 'medium', 'high');
CREATE SEQUENCE ticket_seq START 100;
CREATE TABLE cameras (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    camera_id text NOT NULL REFERENCES cameras(id),
    level risk NOT NULL DEFAULT 'low'
);
CREATE FUNCTION risk_score(r risk) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE r WHEN 'low' THEN 1 WHEN 'medium' THEN 5 ELSE 10 END
$$;
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "schema.sql").write_text(SCHEMA)
    return tmp_path


def _up(settings: Settings, root: Path, workers: int = 2) -> tuple[RunState, lifecycle.Progress]:
    progress = lifecycle.Progress()
    state = lifecycle.up(settings, lifecycle.Request(workers, True, root=root), progress=progress)
    return state, progress


def _sql_settings(make_settings: Callable[..., Settings], **schema: object) -> Settings:
    return make_settings(schema={"sql": ["db/schema.sql"], **schema})


def test_workers_contain_the_full_schema(make_settings: Callable[..., Settings], project: Path) -> None:
    settings = _sql_settings(make_settings)
    state, _ = _up(settings, project)
    env = lifecycle.environment(state, settings)
    with psycopg.connect(env["TESTDB_WORKER_URL_GW1"]) as conn:
        conn.execute("INSERT INTO cameras VALUES ('c1', 'front')")
        conn.execute("INSERT INTO events (camera_id, level) VALUES ('c1', 'high')")
        assert conn.execute("SELECT risk_score(level) FROM events").fetchone() == (10,)
        assert conn.execute("SELECT nextval('ticket_seq')").fetchone() == (100,)
    lifecycle.teardown(state)


def test_unchanged_schema_reuses_the_template(make_settings: Callable[..., Settings], project: Path) -> None:
    settings = _sql_settings(make_settings)
    first, first_progress = _up(settings, project)
    second, second_progress = _up(settings, project)
    assert first_progress.template_built is True
    assert second_progress.template_built is False
    assert first.template == second.template
    lifecycle.teardown(first)
    lifecycle.teardown(second)


def test_changed_input_file_forces_one_rebuild(make_settings: Callable[..., Settings], project: Path) -> None:
    settings = _sql_settings(make_settings)
    first, _ = _up(settings, project)
    (project / "db" / "schema.sql").write_text(SCHEMA + "\nCREATE TABLE zones (id int PRIMARY KEY);\n")
    second, progress = _up(settings, project)
    third, third_progress = _up(settings, project)
    assert progress.template_built is True
    assert second.template != first.template
    assert third_progress.template_built is False
    for state in (first, second, third):
        lifecycle.teardown(state)


def test_extra_inputs_key_the_cache(make_settings: Callable[..., Settings], project: Path) -> None:
    (project / "models.py").write_text("A = 1\n")
    settings = _sql_settings(make_settings, inputs=["*.py"])
    first, _ = _up(settings, project)
    (project / "models.py").write_text("A = 2\n")
    second, progress = _up(settings, project)
    assert progress.template_built is True
    assert second.template != first.template
    lifecycle.teardown(first)
    lifecycle.teardown(second)


def test_concurrent_ups_build_the_template_once(
    make_settings: Callable[..., Settings], project: Path
) -> None:
    settings = _sql_settings(make_settings)
    results: list[tuple[RunState, lifecycle.Progress]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_up(settings, project))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(bool(progress.template_built) for _, progress in results) == [False, True]
    for state, _ in results:
        lifecycle.teardown(state)


def test_failing_sql_names_the_statement_and_leaves_no_template(
    make_settings: Callable[..., Settings], project: Path, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    (project / "db" / "schema.sql").write_text("CREATE TABLE a (id int);\nCREATE TABLE b (id nosuchtype);\n")
    with pytest.raises(SchemaError, match=r"db/schema\.sql:2: CREATE TABLE b \(id nosuchtype\)"):
        _up(_sql_settings(make_settings), project)
    assert not any(name.startswith(prefix) for name in database_names())


def test_failing_command_shows_its_last_output_and_leaves_no_template(
    make_settings: Callable[..., Settings], project: Path, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    settings = make_settings(schema={"command": "echo migrating; echo 'boom: no such revision' >&2; exit 4"})
    with pytest.raises(SchemaError, match=re.escape("exited with 4: migrating | boom: no such revision")):
        _up(settings, project)
    assert not any(name.startswith(prefix) for name in database_names())


def test_command_builds_the_template_through_database_url(
    make_settings: Callable[..., Settings], project: Path
) -> None:
    script = project / "migrate.py"
    script.write_text(
        textwrap.dedent("""
        import os, psycopg
        with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
            conn.execute("CREATE TABLE migrated (id int)")
    """)
    )
    settings = make_settings(schema={"command": f"{sys.executable} migrate.py"})
    state, _ = _up(settings, project)
    with psycopg.connect(lifecycle.environment(state, settings)["TESTDB_WORKER_URL_GW0"]) as conn:
        assert conn.execute("SELECT count(*) FROM migrated").fetchone() == (0,)
    lifecycle.teardown(state)


def test_callable_builds_the_template(make_settings: Callable[..., Settings], project: Path) -> None:
    (project / "appschema_mod.py").write_text(
        textwrap.dedent("""
        from sqlalchemy import Column, Integer, MetaData, Table, create_engine
        metadata = MetaData()
        Table("widgets", metadata, Column("id", Integer, primary_key=True))
        def create_all(url):
            engine = create_engine(url)
            metadata.create_all(engine)
            engine.dispose()
    """)
    )
    settings = make_settings(schema={"callable": "appschema_mod:create_all"})
    state, _ = _up(settings, project)
    with psycopg.connect(lifecycle.environment(state, settings)["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM widgets").fetchone() == (0,)
    lifecycle.teardown(state)


def test_templates_beyond_keep_templates_are_dropped_after_a_build(
    make_settings: Callable[..., Settings], project: Path, prefix: str, database_names: Callable[[], set[str]]
) -> None:
    templates = []
    for version in range(4):
        (project / "db" / "schema.sql").write_text(f"CREATE TABLE v{version} (id int);\n")
        state, _ = _up(_sql_settings(make_settings, keep_templates=2), project, workers=1)
        templates.append(state.template)
        lifecycle.teardown(state)
    remaining = {name for name in database_names() if name.startswith(f"{prefix}_tpl_")}
    assert remaining == set(templates[-2:])
