"""A real Alembic project on disk, one revision file per call, for the migration tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

INI = """\
[alembic]
script_location = migrations
path_separator = os
"""

ENV_PY = """\
from alembic import context
from sqlalchemy import create_engine

url = context.config.get_main_option("sqlalchemy.url")
with create_engine(url).connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = """\
from alembic import op

revision = {revision!r}
down_revision = {down!r}


def upgrade() -> None:
{body}
"""


class AlembicProject:
    """``alembic.ini`` + ``migrations/`` under ``root``; revisions named r0001, r0002, …"""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "migrations" / "versions"
        self.versions.mkdir(parents=True)
        (root / "alembic.ini").write_text(INI)
        (root / "migrations" / "env.py").write_text(ENV_PY)
        self.head: str | None = None
        self.count = 0

    def add(self, body: str, down: str | None = "head", name: str | None = None) -> str:
        """A revision running ``body`` (Python, in upgrade()); its id."""
        self.count += 1
        revision = name or f"r{self.count:04d}"
        parent = self.head if down == "head" else down
        code = REVISION.format(revision=revision, down=parent, body=textwrap.indent(body, "    "))
        self.path(revision).write_text(code)
        self.head = revision
        return revision

    def add_table(self, table: str, down: str | None = "head", name: str | None = None) -> str:
        return self.add(f'op.execute("CREATE TABLE {table} (id serial PRIMARY KEY)")', down, name)

    def path(self, revision: str) -> Path:
        return self.versions / f"{revision}.py"

    def remove(self, revision: str) -> None:
        self.path(revision).unlink()
