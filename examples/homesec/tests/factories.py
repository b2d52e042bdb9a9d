"""Small builders for test data (plain ORM objects; the caller adds and commits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from homesec.models import Camera, CameraStatus, Detection, Event
from homesec.services import risk_level_for

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def camera(camera_id: str, name: str | None = None, **kwargs: object) -> Camera:
    return Camera(
        id=camera_id,
        name=name or camera_id.replace("_", " ").title(),
        folder_path=kwargs.pop("folder_path", f"/srv/nvr/{camera_id}"),
        status=kwargs.pop("status", CameraStatus.ONLINE),
        **kwargs,
    )


def event(
    camera_id: str,
    risk_score: int = 10,
    minutes: int = 0,
    detections: tuple[tuple[str, float], ...] = (),
    **kwargs: object,
) -> Event:
    """An event ``minutes`` after T0 with its risk level derived from the score."""
    return Event(
        camera_id=camera_id,
        started_at=T0 + timedelta(minutes=minutes),
        risk_score=risk_score,
        risk_level=risk_level_for(risk_score),
        detections=[Detection(object_type=o, confidence=c) for o, c in detections],
        **kwargs,
    )
