"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from homesec.models import AlertSeverity, AlertStatus, CameraStatus, RiskLevel


class CameraIn(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: str = Field(min_length=1, max_length=120)
    folder_path: str = Field(min_length=1, max_length=500)
    status: CameraStatus = CameraStatus.ONLINE


class CameraStatusIn(BaseModel):
    status: CameraStatus


class CameraOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    folder_path: str
    status: CameraStatus
    created_at: datetime


class ZoneIn(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    sensitivity: int = Field(default=5, ge=1, le=10)


class ZoneOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    camera_id: str
    name: str
    sensitivity: int


class DetectionBody(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    object_type: str = Field(min_length=1, max_length=32)
    confidence: float = Field(ge=0, le=1)


class EventIn(BaseModel):
    camera_id: str
    risk_score: int = Field(ge=0, le=100)
    started_at: datetime | None = None
    summary: str = ""
    zone_id: int | None = None
    detections: list[DetectionBody] = []


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    camera_id: str
    zone_id: int | None
    started_at: datetime
    risk_score: int
    risk_level: RiskLevel
    summary: str
    reviewed: bool
    detections: list[DetectionBody]


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: int
    rule_id: int | None
    severity: AlertSeverity
    status: AlertStatus
    message: str
    acknowledged_at: datetime | None
    acknowledged_by: str | None


class EventCreatedOut(EventOut):
    alerts: list[AlertOut]


class RuleIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)
    min_risk_level: RiskLevel = RiskLevel.HIGH
    severity: AlertSeverity = AlertSeverity.WARNING
    camera_id: str | None = None
    object_type: str | None = None
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    enabled: bool = True


class RuleOut(RuleIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class UserIn(BaseModel):
    user: str = Field(min_length=1, max_length=80)


class StatsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    camera_id: str
    event_count: int
    unreviewed_count: int
    open_alerts: int
    max_risk_score: int | None
    last_event_at: datetime | None
    events_by_level: dict[str, int]
