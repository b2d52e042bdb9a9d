"""Migration-aware schema sources: the template is keyed by the revision chain.

A :class:`Chain` is what ``testdb.template`` needs from a migration tool: a ``base`` digest
(everything besides the revisions that shapes the build: the tool's config and runner),
the applied revisions in order as ``"id:digest"`` entries (the digest covers the revision
file's content, so an edited revision is a different entry), and ``upgrade``, which brings a
database at any earlier point of the chain to its head. Because ``upgrade`` only applies
what is missing, a clone of an older template whose revisions are a subset of the chain can
be upgraded instead of building from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the idle pytest plugin (django_pytest) imports this package: keep it light
    from testdb.config import SchemaSettings

#: Brings the database at ``url`` (postgresql+psycopg://) up to the chain's head; ``env``
#: points DATABASE_URL and [env] at it; run from the project root.
Upgrade = Callable[[str, Mapping[str, str], Path], None]


@dataclass(frozen=True)
class Chain:
    tool: str
    base: str
    revisions: tuple[str, ...]
    upgrade: Upgrade

    @property
    def entries(self) -> list[str]:
        """What a template's marker records: the base first, then each revision."""
        return [f"{self.tool}:{self.base}", *self.revisions]


def load_chain(schema: SchemaSettings, root: Path, env: Mapping[str, str]) -> Chain | None:
    """The revision chain of the configured migration tool, or None for other sources."""
    if schema.alembic:
        from testdb.migrations import alembic

        return alembic.load_chain(schema, root)
    if schema.django:
        from testdb.migrations import django

        return django.load_chain(schema, root, env)
    return None
