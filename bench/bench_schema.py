"""A generated 100-table schema declared as SQLAlchemy models, shared by the benchmarks.

Tables form an FK tree (table i references table (i-1)//2), each with indexes; a few
enums and sequences are mixed in, like a real application's schema.
"""

from __future__ import annotations

import enum
import os

from sqlalchemy import (
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    create_engine,
    func,
)

TABLES = int(os.environ.get("BENCH_TABLES", "100"))


class Risk(enum.Enum):
    low = "low"
    medium = "medium"
    high = "high"


class Status(enum.Enum):
    online = "online"
    offline = "offline"


def build_metadata(tables: int = TABLES) -> MetaData:
    metadata = MetaData()
    for i in range(tables):
        columns: list[object] = [
            Column("id", Integer, primary_key=True),
            Column("name", String(100), nullable=False),
            Column("body", Text),
            Column("created_at", DateTime, server_default=func.now()),
        ]
        if i:
            columns.append(Column("parent_id", ForeignKey(f"t{(i - 1) // 2:03d}.id", ondelete="CASCADE")))
        if i % 10 == 0:
            columns.append(Column("risk", Enum(Risk, name=f"risk_{i}")))
        if i % 25 == 0:
            columns.append(Column("ticket", Integer, Sequence(f"ticket_seq_{i}")))
        if i % 7 == 0:
            columns.append(Column("status", Enum(Status, name=f"status_{i}")))
        table = Table(f"t{i:03d}", metadata, *columns)  # type: ignore[arg-type]
        Index(f"ix_t{i:03d}_name", table.c.name)
    return metadata


METADATA = build_metadata()


def create_all(url: str) -> None:
    """The schema callable: what a team's ``Base.metadata.create_all`` does."""
    engine = create_engine(url)
    try:
        METADATA.create_all(engine)
    finally:
        engine.dispose()
