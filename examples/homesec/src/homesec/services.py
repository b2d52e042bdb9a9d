"""The service layer: every write goes through here and commits its own unit of work.

Functions take a SQLAlchemy ``Session`` (the API passes one from ``homesec.db``; tests pass
testdb's sessions) and raise ``homesec.errors`` exceptions on bad input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from homesec.errors import (
    AlertNotFoundError,
    AlertStateError,
    CameraInUseError,
    CameraNotFoundError,
    DuplicateCameraError,
    DuplicateRuleError,
    EventNotFoundError,
    InvalidEventError,
    InvalidZoneError,
)
from homesec.models import (
    Alert,
    AlertRule,
    AlertSeverity,
    AlertStatus,
    AuditLog,
    Camera,
    CameraStatus,
    Detection,
    Event,
    RiskLevel,
    Zone,
)

MIN_RISK_SCORE = 0
MAX_RISK_SCORE = 100
#: Lowest score of each level, highest level first.
RISK_THRESHOLDS: tuple[tuple[int, RiskLevel], ...] = (
    (85, RiskLevel.CRITICAL),
    (60, RiskLevel.HIGH),
    (30, RiskLevel.MEDIUM),
    (0, RiskLevel.LOW),
)
MAX_LIST_LIMIT = 500


@dataclass(frozen=True)
class DetectionIn:
    object_type: str
    confidence: float


@dataclass(frozen=True)
class CameraStats:
    camera_id: str
    event_count: int
    unreviewed_count: int
    open_alerts: int
    max_risk_score: int | None
    last_event_at: datetime | None
    events_by_level: dict[str, int] = field(default_factory=dict)


def risk_level_for(score: int) -> RiskLevel:
    """Map a 0-100 risk score to its level."""
    if not MIN_RISK_SCORE <= score <= MAX_RISK_SCORE:
        raise InvalidEventError(
            f"risk score must be between {MIN_RISK_SCORE} and {MAX_RISK_SCORE}, got {score}"
        )
    for threshold, level in RISK_THRESHOLDS:
        if score >= threshold:
            return level
    raise AssertionError("unreachable")  # pragma: no cover


def rule_matches(rule: AlertRule, event: Event) -> bool:
    """Whether ``rule`` fires for ``event`` (pure: reads only the two objects)."""
    if not rule.enabled:
        return False
    if rule.camera_id is not None and rule.camera_id != event.camera_id:
        return False
    if not RiskLevel(event.risk_level).at_least(RiskLevel(rule.min_risk_level)):
        return False
    if rule.object_type is None:
        return True
    return any(
        d.object_type == rule.object_type and d.confidence >= rule.min_confidence for d in event.detections
    )


def _audit(
    session: Session, action: str, entity_type: str, entity_id: object, actor: str, **details: Any
) -> None:
    session.add(
        AuditLog(
            action=action,
            entity_type=entity_type,
            entity_id=str(entity_id),
            actor=actor,
            details=details,
        )
    )


# -- cameras -----------------------------------------------------------------------------


def get_camera(session: Session, camera_id: str) -> Camera:
    camera = session.get(Camera, camera_id)
    if camera is None:
        raise CameraNotFoundError(camera_id)
    return camera


def create_camera(
    session: Session,
    *,
    camera_id: str,
    name: str,
    folder_path: str,
    status: CameraStatus = CameraStatus.ONLINE,
    actor: str = "system",
) -> Camera:
    if session.get(Camera, camera_id) is not None:
        raise DuplicateCameraError(f"camera {camera_id!r} already exists")
    camera = Camera(id=camera_id, name=name, folder_path=folder_path, status=status)
    session.add(camera)
    _audit(session, "camera.created", "camera", camera_id, actor, folder_path=folder_path)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise DuplicateCameraError(f"folder {folder_path!r} is already used by a camera") from exc
    return camera


def set_camera_status(
    session: Session, camera_id: str, status: CameraStatus, actor: str = "system"
) -> Camera:
    camera = get_camera(session, camera_id)
    previous = camera.status
    camera.status = status
    _audit(session, "camera.status", "camera", camera_id, actor, old=previous, new=status)
    session.commit()
    return camera


def delete_camera(session: Session, camera_id: str, actor: str = "system") -> None:
    """Delete a camera and its zones; refused while it still has events."""
    camera = get_camera(session, camera_id)
    if session.scalar(select(exists().where(Event.camera_id == camera_id))):
        raise CameraInUseError(f"camera {camera_id!r} has events and cannot be deleted")
    session.delete(camera)
    _audit(session, "camera.deleted", "camera", camera_id, actor)
    session.commit()


def add_zone(session: Session, camera_id: str, name: str, sensitivity: int = 5) -> Zone:
    get_camera(session, camera_id)
    zone = Zone(camera_id=camera_id, name=name, sensitivity=sensitivity)
    session.add(zone)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise InvalidZoneError(f"invalid zone {name!r} for camera {camera_id!r}") from exc
    return zone


# -- events ------------------------------------------------------------------------------


def record_event(
    session: Session,
    *,
    camera_id: str,
    risk_score: int,
    started_at: datetime | None = None,
    summary: str = "",
    detections: Iterable[DetectionIn] = (),
    zone_id: int | None = None,
) -> Event:
    """Store an event with its detections and raise the alerts its rules call for.

    All or nothing: if any row is refused (e.g. a confidence outside 0..1) nothing is kept.
    """
    level = risk_level_for(risk_score)
    camera = get_camera(session, camera_id)
    if zone_id is not None:
        zone = session.get(Zone, zone_id)
        if zone is None or zone.camera_id != camera_id:
            raise InvalidEventError(f"zone {zone_id} does not belong to camera {camera_id!r}")
    event = Event(
        camera_id=camera_id,
        zone_id=zone_id,
        started_at=started_at or datetime.now(UTC),
        risk_score=risk_score,
        risk_level=level,
        summary=summary,
        detections=[Detection(object_type=d.object_type, confidence=d.confidence) for d in detections],
    )
    session.add(event)
    try:
        session.flush()
        raise_alerts(session, event, camera)
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise InvalidEventError(f"event rejected by the database: {exc.orig}") from exc
    return event


def raise_alerts(session: Session, event: Event, camera: Camera) -> list[Alert]:
    """Add one alert per matching rule. Cameras in maintenance raise none."""
    if camera.status == CameraStatus.MAINTENANCE:
        return []
    rules = session.scalars(
        select(AlertRule)
        .where(AlertRule.enabled, (AlertRule.camera_id.is_(None)) | (AlertRule.camera_id == camera.id))
        .order_by(AlertRule.id)
    ).all()
    alerts = [
        Alert(
            event=event,
            rule_id=rule.id,
            severity=rule.severity,
            message=f"{rule.name}: {event.risk_level} risk on {camera.name}",
        )
        for rule in rules
        if rule_matches(rule, event)
    ]
    session.add_all(alerts)
    session.flush()
    return alerts


def get_event(session: Session, event_id: int) -> Event:
    event = session.get(Event, event_id)
    if event is None:
        raise EventNotFoundError(event_id)
    return event


def mark_reviewed(session: Session, event_id: int, actor: str = "system") -> Event:
    event = get_event(session, event_id)
    event.reviewed = True
    _audit(session, "event.reviewed", "event", event_id, actor)
    session.commit()
    return event


def recent_events_statement(
    camera_id: str | None = None, limit: int = 20, unreviewed_only: bool = False
) -> Select[Any]:
    """SELECT of Event rows, newest first (typed loosely: SQLAlchemy 2.0 and 2.1 differ)."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
    stmt = select(Event).order_by(Event.started_at.desc(), Event.id.desc()).limit(limit)
    if camera_id is not None:
        stmt = stmt.where(Event.camera_id == camera_id)
    if unreviewed_only:
        stmt = stmt.where(Event.reviewed.is_(False))
    return stmt


def list_recent_events(
    session: Session, camera_id: str | None = None, limit: int = 20, unreviewed_only: bool = False
) -> Sequence[Event]:
    return session.scalars(recent_events_statement(camera_id, limit, unreviewed_only)).all()


# -- alerts ------------------------------------------------------------------------------


def create_rule(
    session: Session,
    *,
    name: str,
    min_risk_level: RiskLevel = RiskLevel.HIGH,
    severity: AlertSeverity = AlertSeverity.WARNING,
    camera_id: str | None = None,
    object_type: str | None = None,
    min_confidence: float = 0.5,
    enabled: bool = True,
) -> AlertRule:
    if camera_id is not None:
        get_camera(session, camera_id)
    rule = AlertRule(
        name=name,
        min_risk_level=min_risk_level,
        severity=severity,
        camera_id=camera_id,
        object_type=object_type,
        min_confidence=min_confidence,
        enabled=enabled,
    )
    session.add(rule)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise DuplicateRuleError(f"an alert rule named {name!r} already exists") from exc
    return rule


def _get_alert(session: Session, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise AlertNotFoundError(alert_id)
    return alert


def acknowledge_alert(session: Session, alert_id: int, user: str, now: datetime | None = None) -> Alert:
    alert = _get_alert(session, alert_id)
    if alert.status != AlertStatus.OPEN:
        raise AlertStateError(f"alert {alert_id} is {alert.status}, only open alerts can be acknowledged")
    alert.status = AlertStatus.ACKNOWLEDGED
    alert.acknowledged_at = now or datetime.now(UTC)
    alert.acknowledged_by = user
    _audit(session, "alert.acknowledged", "alert", alert_id, user)
    session.commit()
    return alert


def resolve_alert(session: Session, alert_id: int, user: str) -> Alert:
    alert = _get_alert(session, alert_id)
    if alert.status == AlertStatus.RESOLVED:
        raise AlertStateError(f"alert {alert_id} is already resolved")
    alert.status = AlertStatus.RESOLVED
    _audit(session, "alert.resolved", "alert", alert_id, user)
    session.commit()
    return alert


# -- statistics --------------------------------------------------------------------------


def stats_statements(camera_id: str) -> tuple[Any, Any, Any]:
    """(totals, open alert count, events per level) for one camera; shared with the async
    repository."""
    totals = select(
        func.count(Event.id),
        func.count(Event.id).filter(Event.reviewed.is_(False)),
        func.max(Event.risk_score),
        func.max(Event.started_at),
    ).where(Event.camera_id == camera_id)
    open_alerts = (
        select(func.count(Alert.id))
        .join(Event, Alert.event_id == Event.id)
        .where(Event.camera_id == camera_id, Alert.status == AlertStatus.OPEN)
    )
    by_level = (
        select(Event.risk_level, func.count(Event.id))
        .where(Event.camera_id == camera_id)
        .group_by(Event.risk_level)
    )
    return totals, open_alerts, by_level


def build_stats(
    camera_id: str, totals: Any, open_alerts: int, by_level: Iterable[tuple[RiskLevel, int]]
) -> CameraStats:
    levels = {level.value: 0 for level in RiskLevel}
    for level, count in by_level:
        levels[RiskLevel(level).value] = count
    event_count, unreviewed, max_score, last_at = totals
    return CameraStats(
        camera_id=camera_id,
        event_count=event_count,
        unreviewed_count=unreviewed,
        open_alerts=open_alerts,
        max_risk_score=max_score,
        last_event_at=last_at,
        events_by_level=levels,
    )


def camera_stats(session: Session, camera_id: str) -> CameraStats:
    get_camera(session, camera_id)
    totals, open_alerts, by_level = stats_statements(camera_id)
    return build_stats(
        camera_id,
        session.execute(totals).one(),
        session.scalar(open_alerts) or 0,
        session.execute(by_level).all(),
    )
