"""`testdb clean` as a user runs it: empties the run's databases, refuses strangers'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ._cli import Cli

SCHEMA = (
    "CREATE TABLE cameras (id int PRIMARY KEY);\n"
    "CREATE TABLE events (id int PRIMARY KEY, camera_id int NOT NULL REFERENCES cameras(id));\n"
    "CREATE TABLE alembic_version (version_num text);\n"
)


def _project(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "schema.sql").write_text(SCHEMA)
    (tmp_path / "testdb.toml").write_text(
        f'server = "local"\nprefix = "{prefix}"\n[schema]\nsql = ["schema.sql"]\n'
    )


def _fill(admin: psycopg.Connection[Any], database: str) -> None:
    dsn = admin.info.dsn.replace(f"dbname={admin.info.dbname}", f"dbname={database}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO cameras VALUES (1), (2)")
        conn.execute("INSERT INTO events VALUES (1, 1)")
        conn.execute("INSERT INTO alembic_version VALUES ('0001')")


def _count(admin: psycopg.Connection[Any], database: str, table: str) -> int:
    dsn = admin.info.dsn.replace(f"dbname={admin.info.dbname}", f"dbname={database}")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        return int(row[0]) if row else -1


def test_clean_empties_every_database_of_the_run_but_kept_tables(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    _project(tmp_path, prefix)
    assert cli("up", "-n", "2").code == 0
    for name in (prefix, f"{prefix}_gw1"):
        _fill(admin, name)
    result = cli("clean")
    assert result.code == 0, result.err
    assert f"{prefix}_gw1" in result.err
    for name in (prefix, f"{prefix}_gw1"):
        assert _count(admin, name, "events") == 0
        assert _count(admin, name, "cameras") == 0
        assert _count(admin, name, "alembic_version") == 1
    assert cli("down").code == 0


def test_clean_one_worker_leaves_the_others(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    _project(tmp_path, prefix)
    assert cli("up", "-n", "2").code == 0
    _fill(admin, f"{prefix}_gw0")
    _fill(admin, f"{prefix}_gw1")
    assert cli("clean", "--worker", "gw1").code == 0
    assert _count(admin, f"{prefix}_gw1", "cameras") == 0
    assert _count(admin, f"{prefix}_gw0", "cameras") == 2
    assert cli("down").code == 0


def test_clean_refuses_a_database_testdb_did_not_create(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    name = f"{prefix}_mine"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = admin.info.dsn.replace(f"dbname={admin.info.dbname}", f"dbname={name}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        url = f"postgresql://{admin.info.user}@127.0.0.1:{admin.info.port}/{name}"
        refused = cli("clean", "--url", url)
        assert refused.code == 2
        assert (
            refused.error
            == f"testdb: error: database '{name}' was not created by testdb; refusing to empty it"
        )
        assert _count(admin, name, "t") == 1
        forced = cli("clean", "--url", url, "--force")
        assert forced.code == 0, forced.err
        assert _count(admin, name, "t") == 0
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_clean_never_empties_a_protected_database(cli: Cli, admin: psycopg.Connection[Any]) -> None:
    url = f"postgresql://{admin.info.user}@127.0.0.1:{admin.info.port}/postgres"
    result = cli("clean", "--url", url, "--force")
    assert result.code == 2
    assert result.error == "testdb: error: refusing to empty protected database 'postgres'"


def test_clean_refuses_another_runs_database(
    cli: Cli, tmp_path: Path, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    for where in (mine, theirs):
        assert cli("up", "-n", "1", "--server", "local", "--prefix", prefix, "--unique", cwd=where).code == 0
    other = {n for n in database_names_of(admin, prefix) if "_tpl_" not in n} - _own(mine)
    target = sorted(other)[0]
    result = cli("clean", "--database", target, cwd=mine)
    assert result.code == 2
    assert "belongs to run" in result.error
    for where in (mine, theirs):
        assert cli("down", cwd=where).code == 0


def database_names_of(admin: psycopg.Connection[Any], prefix: str) -> set[str]:
    rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)).fetchall()
    return {row[0] for row in rows}


def _own(where: Path) -> set[str]:
    import json

    state = json.loads((where / ".testdb" / "state.json").read_text())
    return {state["serial"], *state["workers"].values()}
