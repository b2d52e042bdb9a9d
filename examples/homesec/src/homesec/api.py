"""The HTTP API.

Writes (POST/PATCH/DELETE) are plain ``def`` endpoints that call the sync service layer
with a session from ``homesec.db.get_session``; reads are ``async def`` endpoints on the
asyncpg engine. ``GET /events?camera_id=`` is served from the Redis cache when warm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from homesec import cache, db, repository, services
from homesec.config import get_settings
from homesec.errors import HomesecError
from homesec.models import AlertStatus, CameraStatus
from homesec.schemas import (
    AlertOut,
    CameraIn,
    CameraOut,
    CameraStatusIn,
    EventCreatedOut,
    EventIn,
    EventOut,
    RuleIn,
    RuleOut,
    StatsOut,
    UserIn,
    ZoneIn,
    ZoneOut,
)


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await db.dispose_engines()
    cache.close_clients()


app = FastAPI(title="homesec", lifespan=lifespan)


@app.exception_handler(HomesecError)
async def domain_error(_request: Request, exc: HomesecError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


def sync_session() -> Iterator[Session]:
    with db.get_session() as session:
        yield session


async def async_session() -> AsyncIterator[AsyncSession]:
    async with db.get_async_session() as session:
        yield session


def recent_events_cache() -> cache.RecentEventsCache:
    settings = get_settings()
    return cache.RecentEventsCache(
        cache.get_redis(settings.redis_url),
        limit=settings.recent_events_limit,
        ttl=settings.recent_events_ttl,
    )


SyncDB = Annotated[Session, Depends(sync_session)]
AsyncDB = Annotated[AsyncSession, Depends(async_session)]
Cache = Annotated[cache.RecentEventsCache, Depends(recent_events_cache)]


def _event_json(event: Any) -> dict[str, Any]:
    return EventOut.model_validate(event).model_dump(mode="json")


@app.get("/health")
async def health(session: AsyncDB, events_cache: Cache) -> dict[str, str]:
    return {
        "status": "ok",
        "database": await repository.database_name(session),
        "redis": "ok" if events_cache.client.ping() else "down",
    }


# -- cameras -----------------------------------------------------------------------------


@app.get("/cameras", response_model=list[CameraOut])
async def list_cameras(session: AsyncDB, status: CameraStatus | None = None) -> Any:
    return await repository.list_cameras(session, status)


@app.post("/cameras", response_model=CameraOut, status_code=status.HTTP_201_CREATED)
def create_camera(body: CameraIn, session: SyncDB) -> Any:
    return services.create_camera(
        session, camera_id=body.id, name=body.name, folder_path=body.folder_path, status=body.status
    )


@app.get("/cameras/{camera_id}", response_model=CameraOut)
async def get_camera(camera_id: str, session: AsyncDB) -> Any:
    return await repository.require_camera(session, camera_id)


@app.patch("/cameras/{camera_id}", response_model=CameraOut)
def update_camera_status(camera_id: str, body: CameraStatusIn, session: SyncDB) -> Any:
    return services.set_camera_status(session, camera_id, body.status)


@app.delete("/cameras/{camera_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_camera(camera_id: str, session: SyncDB) -> Response:
    services.delete_camera(session, camera_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@app.post("/cameras/{camera_id}/zones", response_model=ZoneOut, status_code=status.HTTP_201_CREATED)
def add_zone(camera_id: str, body: ZoneIn, session: SyncDB) -> Any:
    return services.add_zone(session, camera_id, body.name, body.sensitivity)


@app.get("/cameras/{camera_id}/stats", response_model=StatsOut)
async def camera_stats(camera_id: str, session: AsyncDB) -> Any:
    return await repository.camera_stats(session, camera_id)


# -- events ------------------------------------------------------------------------------


@app.post("/events", response_model=EventCreatedOut, status_code=status.HTTP_201_CREATED)
def create_event(body: EventIn, session: SyncDB, events_cache: Cache) -> Any:
    event = services.record_event(
        session,
        camera_id=body.camera_id,
        risk_score=body.risk_score,
        started_at=body.started_at,
        summary=body.summary,
        zone_id=body.zone_id,
        detections=[services.DetectionIn(d.object_type, d.confidence) for d in body.detections],
    )
    events_cache.push(event.camera_id, _event_json(event))
    return event


@app.get("/events", response_model=list[EventOut])
async def list_events(
    response: Response,
    session: AsyncDB,
    events_cache: Cache,
    camera_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=services.MAX_LIST_LIMIT)] = 20,
) -> Any:
    if camera_id is None or limit > events_cache.limit:
        response.headers["X-Cache"] = "bypass"
        return await repository.list_recent_events(session, camera_id, limit)
    cached = events_cache.get(camera_id)
    if cached is not None:
        response.headers["X-Cache"] = "hit"
        return cached[:limit]
    await repository.require_camera(session, camera_id)
    events = await repository.list_recent_events(session, camera_id, events_cache.limit)
    events_cache.fill(camera_id, [_event_json(e) for e in events])
    response.headers["X-Cache"] = "miss"
    return events[:limit]


@app.post("/events/{event_id}/review", response_model=EventOut)
def review_event(event_id: int, session: SyncDB, events_cache: Cache) -> Any:
    event = services.mark_reviewed(session, event_id)
    events_cache.invalidate(event.camera_id)
    return event


# -- alerts ------------------------------------------------------------------------------


@app.post("/alert-rules", response_model=RuleOut, status_code=status.HTTP_201_CREATED)
def create_rule(body: RuleIn, session: SyncDB) -> Any:
    return services.create_rule(session, **body.model_dump())


@app.get("/alerts", response_model=list[AlertOut])
async def list_alerts(
    session: AsyncDB, status: AlertStatus | None = None, camera_id: str | None = None
) -> Any:
    return await repository.list_alerts(session, status, camera_id)


@app.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut)
def acknowledge_alert(alert_id: int, body: UserIn, session: SyncDB) -> Any:
    return services.acknowledge_alert(session, alert_id, body.user)


@app.post("/alerts/{alert_id}/resolve", response_model=AlertOut)
def resolve_alert(alert_id: int, body: UserIn, session: SyncDB) -> Any:
    return services.resolve_alert(session, alert_id, body.user)
