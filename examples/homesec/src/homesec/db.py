"""Engines and sessions.

``create_schema`` is what testdb calls (``[tool.testdb.schema] callable``) to build the
template database every worker database is cloned from. The application itself gets its
engines from the settings, one engine per URL, so that a test which points
``DATABASE_URL`` at another database (testdb's ``testdb_env``) gets a fresh engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from homesec.config import get_settings, sync_url
from homesec.models import Base

_engines: dict[tuple[str, int], Engine] = {}
_async_engines: dict[tuple[str, int], AsyncEngine] = {}


def create_schema(url: str) -> None:
    """Create every table, enum type and index in the (empty) database at ``url``."""
    engine = create_engine(sync_url(url))
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()


def get_engine() -> Engine:
    settings = get_settings()
    key = (settings.database_url, settings.database_pool_size)
    if key not in _engines:
        _engines[key] = create_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_pool_overflow,
            pool_pre_ping=True,
        )
    return _engines[key]


@contextmanager
def get_session() -> Iterator[Session]:
    """A unit of work: committed when the block ends, rolled back if it raises."""
    session = sessionmaker(get_engine(), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_async_engine() -> AsyncEngine:
    """The asyncpg engine. Its connections belong to the running event loop: dispose of it
    (``dispose_engines``) before that loop closes, as the API's lifespan does."""
    settings = get_settings()
    key = (settings.database_url_async, settings.database_pool_size)
    if key not in _async_engines:
        _async_engines[key] = create_async_engine(
            settings.database_url_async,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_pool_overflow,
        )
    return _async_engines[key]


@asynccontextmanager
async def get_async_session() -> AsyncIterator[AsyncSession]:
    session = async_sessionmaker(get_async_engine(), expire_on_commit=False)()
    try:
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


def dispose_sync_engines() -> None:
    """Close the sync engines' pooled connections and forget the engines."""
    while _engines:
        _, engine = _engines.popitem()
        engine.dispose()


async def dispose_engines() -> None:
    """Close every pooled connection, async and sync, and forget the engines."""
    while _async_engines:
        _, engine = _async_engines.popitem()
        await engine.dispose()
    dispose_sync_engines()
