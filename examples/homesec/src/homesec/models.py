"""SQLAlchemy 2 models. This file is a testdb schema input: editing it rebuilds the template."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class CameraStatus(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class RiskLevel(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(RiskLevel).index(self)

    def at_least(self, other: RiskLevel) -> bool:
        return self.rank >= other.rank


class AlertSeverity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def _pg_enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


# One instance per PostgreSQL enum type, shared by every column that uses it.
CAMERA_STATUS = _pg_enum(CameraStatus, "camera_status")
RISK_LEVEL = _pg_enum(RiskLevel, "risk_level")
ALERT_SEVERITY = _pg_enum(AlertSeverity, "alert_severity")
ALERT_STATUS = _pg_enum(AlertStatus, "alert_status")


class Camera(Base):
    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    folder_path: Mapped[str] = mapped_column(String(500), unique=True)
    status: Mapped[CameraStatus] = mapped_column(
        CAMERA_STATUS, default=CameraStatus.ONLINE, server_default=CameraStatus.ONLINE.value
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    zones: Mapped[list[Zone]] = relationship(
        back_populates="camera", cascade="all, delete-orphan", passive_deletes=True
    )
    # Events are history: the database refuses to delete a camera that still has some.
    events: Mapped[list[Event]] = relationship(back_populates="camera", passive_deletes="all")


class Zone(Base):
    __tablename__ = "zones"
    __table_args__ = (
        UniqueConstraint("camera_id", "name"),
        CheckConstraint("sensitivity BETWEEN 1 AND 10", name="zone_sensitivity_range"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    sensitivity: Mapped[int] = mapped_column(Integer, default=5, server_default="5")

    camera: Mapped[Camera] = relationship(back_populates="zones")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("risk_score BETWEEN 0 AND 100", name="event_risk_score_range"),
        Index("ix_events_camera_started", "camera_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    zone_id: Mapped[int | None] = mapped_column(ForeignKey("zones.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    risk_score: Mapped[int] = mapped_column(Integer)
    risk_level: Mapped[RiskLevel] = mapped_column(RISK_LEVEL)
    summary: Mapped[str] = mapped_column(Text, default="", server_default="")
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    camera: Mapped[Camera] = relationship(back_populates="events")
    zone: Mapped[Zone | None] = relationship()
    detections: Mapped[list[Detection]] = relationship(
        back_populates="event", cascade="all, delete-orphan", passive_deletes=True
    )
    alerts: Mapped[list[Alert]] = relationship(
        back_populates="event", cascade="all, delete-orphan", passive_deletes=True
    )


class Detection(Base):
    __tablename__ = "detections"
    __table_args__ = (
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="detection_confidence_range"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)

    event: Mapped[Event] = relationship(back_populates="detections")


class AlertRule(Base):
    __tablename__ = "alert_rules"
    __table_args__ = (
        CheckConstraint("min_confidence >= 0 AND min_confidence <= 1", name="rule_confidence_range"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    # NULL: the rule applies to every camera.
    camera_id: Mapped[str | None] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    # NULL: any detected object (or none) matches.
    object_type: Mapped[str | None] = mapped_column(String(32))
    min_confidence: Mapped[float] = mapped_column(Float, default=0.5, server_default="0.5")
    min_risk_level: Mapped[RiskLevel] = mapped_column(
        RISK_LEVEL, default=RiskLevel.HIGH, server_default=RiskLevel.HIGH.value
    )
    severity: Mapped[AlertSeverity] = mapped_column(
        ALERT_SEVERITY, default=AlertSeverity.WARNING, server_default=AlertSeverity.WARNING.value
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class Alert(Base):
    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("event_id", "rule_id"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[int | None] = mapped_column(ForeignKey("alert_rules.id", ondelete="SET NULL"))
    severity: Mapped[AlertSeverity] = mapped_column(ALERT_SEVERITY)
    status: Mapped[AlertStatus] = mapped_column(
        ALERT_STATUS, default=AlertStatus.OPEN, server_default=AlertStatus.OPEN.value
    )
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))

    event: Mapped[Event] = relationship(back_populates="alerts")
    rule: Mapped[AlertRule | None] = relationship()


class AuditLog(Base):
    """Append-only; deliberately no foreign keys so history survives deletes."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(80), default="system", server_default="system")
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
