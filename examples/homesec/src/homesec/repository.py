"""Async read side (asyncpg): what the API's GET endpoints use.

Sessions are expected to have ``expire_on_commit=False`` (as ``homesec.db`` makes them):
after a commit, attributes are not reloaded, which under asyncio would need an await.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from homesec.errors import CameraNotFoundError, DuplicateCameraError, EventNotFoundError
from homesec.models import Alert, AlertStatus, Camera, CameraStatus, Event
from homesec.services import CameraStats, build_stats, recent_events_statement, stats_statements


async def database_name(session: AsyncSession) -> str:
    return str(await session.scalar(text("SELECT current_database()")))


async def get_camera(session: AsyncSession, camera_id: str) -> Camera | None:
    return await session.get(Camera, camera_id)


async def require_camera(session: AsyncSession, camera_id: str) -> Camera:
    camera = await get_camera(session, camera_id)
    if camera is None:
        raise CameraNotFoundError(camera_id)
    return camera


async def list_cameras(session: AsyncSession, status: CameraStatus | None = None) -> Sequence[Camera]:
    stmt = select(Camera).order_by(Camera.name, Camera.id)
    if status is not None:
        stmt = stmt.where(Camera.status == status)
    return (await session.scalars(stmt)).all()


async def add_camera(session: AsyncSession, camera_id: str, name: str, folder_path: str) -> Camera:
    """Insert a camera (used by the importer); commits."""
    camera = Camera(id=camera_id, name=name, folder_path=folder_path)
    session.add(camera)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise DuplicateCameraError(f"camera {camera_id!r} or folder {folder_path!r} exists") from exc
    return camera


async def list_recent_events(
    session: AsyncSession,
    camera_id: str | None = None,
    limit: int = 20,
    unreviewed_only: bool = False,
) -> Sequence[Event]:
    """Newest first, detections loaded (lazy loading is not available under asyncio)."""
    stmt = recent_events_statement(camera_id, limit, unreviewed_only).options(selectinload(Event.detections))
    return (await session.scalars(stmt)).all()


async def mark_event_reviewed(session: AsyncSession, event_id: int) -> Event:
    event = await session.get(Event, event_id)
    if event is None:
        raise EventNotFoundError(event_id)
    event.reviewed = True
    await session.commit()
    return event


async def list_alerts(
    session: AsyncSession, status: AlertStatus | None = None, camera_id: str | None = None
) -> Sequence[Alert]:
    stmt = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc())
    if status is not None:
        stmt = stmt.where(Alert.status == status)
    if camera_id is not None:
        stmt = stmt.join(Event, Alert.event_id == Event.id).where(Event.camera_id == camera_id)
    return (await session.scalars(stmt)).all()


async def count_open_alerts(session: AsyncSession) -> int:
    return await session.scalar(select(func.count(Alert.id)).where(Alert.status == AlertStatus.OPEN)) or 0


async def camera_stats(session: AsyncSession, camera_id: str) -> CameraStats:
    await require_camera(session, camera_id)
    totals, open_alerts, by_level = stats_statements(camera_id)
    return build_stats(
        camera_id,
        (await session.execute(totals)).one(),
        await session.scalar(open_alerts) or 0,
        (await session.execute(by_level)).all(),
    )
