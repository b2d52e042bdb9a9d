"""[env] templates: existing suites that read their own variable names run unchanged.

Each generated project has no testdb-specific code in its conftest or settings; it runs
under `testdb run -n 2 -- pytest -n 2` and in self-provisioning mode, and asserts from
inside the tests that each worker really uses its own database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from testdb.servers.base import ServerInfo

pytest_plugins = ["pytester"]
# These test the plugin, not the server: the embedded one is enough (and the fastest).
pytestmark = pytest.mark.parametrize("pg_server", ["embedded"], indirect=True)
TESTDB = Path(sys.executable).parent / "testdb"

FASTAPI_SETTINGS = """
from pydantic_settings import BaseSettings

class Settings(BaseSettings):
    POSTGRES_SERVER: str
    POSTGRES_PORT: int = 5432
    POSTGRES_USER: str
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str

    @property
    def dsn(self) -> str:
        from sqlalchemy.engine import URL
        return URL.create("postgresql", self.POSTGRES_USER, self.POSTGRES_PASSWORD or None,
                          self.POSTGRES_SERVER, self.POSTGRES_PORT, self.POSTGRES_DB
                          ).render_as_string(hide_password=False)

settings = Settings()  # read at import time, like the FastAPI template
"""

FASTAPI_TEST = """
import psycopg
import pytest
from app_settings import settings

@pytest.mark.parametrize("n", range(4))
def test_settings_point_at_this_workers_database(n):
    import os
    worker = os.environ["PYTEST_XDIST_WORKER"]
    with psycopg.connect(settings.dsn) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
    assert settings.POSTGRES_DB == name
    assert name.endswith("_" + worker)
"""

FASTAPI_ENV = """
[env]
POSTGRES_SERVER = "{host}"
POSTGRES_PORT = "{port}"
POSTGRES_USER = "{user}"
POSTGRES_PASSWORD = "{password}"
POSTGRES_DB = "{database}"
"""

TWO_DRIVER_TEST = """
import asyncio, os
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

SYNC_URL = os.environ["TEST_DATABASE_URI_SYNC"]
ASYNC_URL = os.environ["TEST_DATABASE_URI_ASYNC"]

def test_both_urls_reach_the_same_worker_database():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert SYNC_URL.startswith("postgresql+psycopg://")
    assert ASYNC_URL.startswith("postgresql+asyncpg://")
    engine = create_engine(SYNC_URL)
    with engine.begin() as conn:
        sync_name = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text("CREATE TABLE IF NOT EXISTS marker (w text)"))
        conn.execute(text("INSERT INTO marker VALUES (:w)"), {"w": worker})
    engine.dispose()

    async def read():
        aengine = create_async_engine(ASYNC_URL)
        async with aengine.connect() as conn:
            name = (await conn.execute(text("SELECT current_database()"))).scalar()
            rows = (await conn.execute(text("SELECT DISTINCT w FROM marker"))).scalars().all()
        await aengine.dispose()
        return name, rows

    async_name, writers = asyncio.run(read())
    assert sync_name == async_name and sync_name.endswith("_" + worker)
    assert writers == [worker]

def test_second_test_on_each_worker():
    assert os.environ["PYTEST_XDIST_WORKER"] in os.environ["TEST_DATABASE_URI_SYNC"]
"""

TWO_DRIVER_ENV = """
[env]
TEST_DATABASE_URI_SYNC = "{url:psycopg}"
TEST_DATABASE_URI_ASYNC = "{url:asyncpg}"
"""

ALEMBIC_ENV_PY = """
import os
from alembic import context
from sqlalchemy import create_engine

def url():
    return (f"postgresql+psycopg://{os.environ['POSTGRES_USER']}:{os.environ['POSTGRES_PASSWORD']}"
            f"@{os.environ['POSTGRES_SERVER']}:{os.environ['POSTGRES_PORT']}/{os.environ['POSTGRES_DB']}")

engine = create_engine(url())
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

ALEMBIC_REVISION = """
revision = "0001"
down_revision = None
from alembic import op
import sqlalchemy as sa

def upgrade():
    op.create_table("cameras", sa.Column("id", sa.String, primary_key=True))

def downgrade():
    op.drop_table("cameras")
"""

ALEMBIC_TEST = """
import os, psycopg

def test_migrated_schema_is_in_this_workers_database():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0].endswith("_" + worker)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
        assert conn.execute("SELECT count(*) FROM cameras").fetchone() == (0,)
        conn.execute("INSERT INTO cameras VALUES (%s)", (worker,))

def test_another():
    assert os.environ["POSTGRES_DB"].endswith("_" + os.environ["PYTEST_XDIST_WORKER"])
"""


def _config(pg_server: ServerInfo, prefix: str, extra: str) -> str:
    return f'server = "url"\nurl = "{pg_server.url}"\nprefix = "{prefix}"\n' + textwrap.dedent(extra)


@pytest.fixture
def fastapi_project(pytester: pytest.Pytester, pg_server: ServerInfo, prefix: str) -> pytest.Pytester:
    pytester.makepyfile(app_settings=FASTAPI_SETTINGS, test_app=FASTAPI_TEST)
    pytester.makeconftest("import app_settings  # settings built while conftest is imported\n")
    pytester.makefile(".toml", testdb=_config(pg_server, prefix, FASTAPI_ENV))
    return pytester


@pytest.fixture
def two_driver_project(pytester: pytest.Pytester, pg_server: ServerInfo, prefix: str) -> pytest.Pytester:
    pytester.makepyfile(test_drivers=TWO_DRIVER_TEST)
    pytester.makefile(".toml", testdb=_config(pg_server, prefix, TWO_DRIVER_ENV))
    return pytester


@pytest.fixture
def alembic_project(pytester: pytest.Pytester, pg_server: ServerInfo, prefix: str) -> pytest.Pytester:
    root = pytester.path
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ALEMBIC_ENV_PY)
    (root / "migrations" / "script.py.mako").write_text("")
    (root / "migrations" / "versions" / "0001_cameras.py").write_text(ALEMBIC_REVISION)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    pytester.makepyfile(test_migrated=ALEMBIC_TEST)
    alembic = Path(sys.executable).parent / "alembic"
    config = FASTAPI_ENV.replace(
        "[env]", f'[schema]\ncommand = "{alembic} upgrade head"\ninputs = ["migrations/**/*.py"]\n[env]'
    )
    pytester.makefile(".toml", testdb=_config(pg_server, prefix, config))
    return pytester


def _under_testdb_run(project: pytest.Pytester) -> str:
    result = subprocess.run(
        [
            str(TESTDB),
            "run",
            "-n",
            "2",
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "xdist",
            "-n",
            "2",
            "--dist=each",
            "-p",
            "no:cacheprovider",
        ],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _self_provisioned(project: pytest.Pytester) -> pytest.RunResult:
    return project.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist=each", "--testdb")


@pytest.fixture(autouse=True)
def _no_outer_run(
    monkeypatch: pytest.MonkeyPatch, prefix: str, database_names: Callable[[], set[str]]
) -> object:
    for name in list(os.environ):
        if name.startswith(("TESTDB_", "POSTGRES_")) or name in ("DATABASE_URL", "PYTEST_XDIST_WORKER"):
            monkeypatch.delenv(name)
    yield
    assert {n for n in database_names() if n.startswith(prefix) and "_tpl_" not in n} == set()


def test_fastapi_parts_under_testdb_run(fastapi_project: pytest.Pytester) -> None:
    assert "8 passed" in _under_testdb_run(fastapi_project)


def test_fastapi_parts_self_provisioned(fastapi_project: pytest.Pytester) -> None:
    _self_provisioned(fastapi_project).assert_outcomes(passed=8)


def test_two_drivers_under_testdb_run(two_driver_project: pytest.Pytester) -> None:
    assert "4 passed" in _under_testdb_run(two_driver_project)


def test_two_drivers_self_provisioned(two_driver_project: pytest.Pytester) -> None:
    _self_provisioned(two_driver_project).assert_outcomes(passed=4)


def test_alembic_template_under_testdb_run(alembic_project: pytest.Pytester) -> None:
    assert "4 passed" in _under_testdb_run(alembic_project)


def test_alembic_template_self_provisioned(alembic_project: pytest.Pytester) -> None:
    _self_provisioned(alembic_project).assert_outcomes(passed=4)
