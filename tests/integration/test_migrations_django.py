"""Django templates: what Django's test-database creation makes, keyed and extended by the graph."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from psycopg import sql

from testdb.config import SchemaSettings
from testdb.errors import SchemaError
from testdb.ownership import Marker
from testdb.servers.base import ServerInfo, admin_connection, connect
from testdb.template import TemplateResult, ensure_template

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_app"
NEW_MIGRATION = """\
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_seed_categories")]
    operations = [migrations.RunSQL("CREATE TABLE shop_audit (id serial PRIMARY KEY)")]
"""

pytest.importorskip("django")

Query = Callable[[str, str], list[tuple[object, ...]]]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "django_app"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    return root


def _env(info: ServerInfo, database: str) -> Mapping[str, str]:
    return {"DATABASE_URL": info.database_url(database).render_as_string(hide_password=False)}


@pytest.fixture
def ensure(pg_server: ServerInfo, prefix: str, app: Path) -> Callable[..., TemplateResult]:
    def run(django: str = "mysite.settings") -> TemplateResult:
        marker = Marker.for_run(secrets.token_hex(6), "worker", prefix, None)
        return ensure_template(pg_server, prefix, SchemaSettings(django=django), marker, app, _env)

    return run


@pytest.fixture
def clone_of(pg_server: ServerInfo) -> Iterator[Query]:
    """Run a query in a fresh clone of a template (templates refuse connections)."""
    made: list[str] = []

    def query(template: str, statement: str) -> list[tuple[object, ...]]:
        clone = f"{template}_q{len(made)}"
        with admin_connection(pg_server) as conn:
            create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
            conn.execute(create.format(sql.Identifier(clone), sql.Identifier(template)))
        made.append(clone)
        with connect(pg_server.database_url(clone)) as conn:
            return list(conn.execute(statement.encode()).fetchall())

    yield query
    with admin_connection(pg_server) as conn:
        for clone in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(clone)))


def test_the_template_holds_the_data_migrations_rows(
    ensure: Callable[..., TemplateResult], clone_of: Query
) -> None:
    result = ensure()
    assert result.notice == "built"
    assert clone_of(result.name, "SELECT slug FROM shop_category ORDER BY slug") == [
        ("books",),
        ("garden",),
        ("kitchen",),
    ]


def test_the_template_holds_the_database_cache_table(
    ensure: Callable[..., TemplateResult], clone_of: Query
) -> None:
    result = ensure()
    assert clone_of(result.name, "SELECT count(*) FROM shop_cache") == [(0,)]


def test_a_new_migration_extends_the_template(
    ensure: Callable[..., TemplateResult],
    app: Path,
    clone_of: Query,
) -> None:
    older = ensure()
    (app / "shop" / "migrations" / "0003_audit.py").write_text(NEW_MIGRATION)
    result = ensure()
    assert result.notice == f"extended from {older.name} (+1 revisions)"
    assert clone_of(result.name, "SELECT count(*) FROM shop_audit") == [(0,)]
    assert clone_of(result.name, "SELECT count(*) FROM shop_category") == [(3,)]  # not seeded twice


def test_an_edited_applied_migration_is_a_full_build_that_says_why(
    ensure: Callable[..., TemplateResult], app: Path
) -> None:
    older = ensure()
    seed = app / "shop" / "migrations" / "0002_seed_categories.py"
    seed.write_text(seed.read_text().replace('("Books", "books"), ', ""))
    result = ensure()
    assert (
        result.notice
        == f"built (revision shop.0002_seed_categories was edited after {older.name} applied it)"
    )


def test_django_env_without_a_settings_module_is_refused(
    ensure: Callable[..., TemplateResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    with pytest.raises(SchemaError, match="DJANGO_SETTINGS_MODULE is not set"):
        ensure(django="env")
