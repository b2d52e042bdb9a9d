"""Domain errors raised by the service layer; the API maps them to HTTP status codes."""

from __future__ import annotations


class HomesecError(Exception):
    status_code = 400


class NotFoundError(HomesecError):
    status_code = 404


class ConflictError(HomesecError):
    status_code = 409


class InvalidInputError(HomesecError):
    status_code = 422


class CameraNotFoundError(NotFoundError):
    def __init__(self, camera_id: str) -> None:
        super().__init__(f"camera {camera_id!r} not found")
        self.camera_id = camera_id


class EventNotFoundError(NotFoundError):
    def __init__(self, event_id: int) -> None:
        super().__init__(f"event {event_id} not found")
        self.event_id = event_id


class AlertNotFoundError(NotFoundError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"alert {alert_id} not found")
        self.alert_id = alert_id


class DuplicateCameraError(ConflictError):
    pass


class DuplicateRuleError(ConflictError):
    pass


class CameraInUseError(ConflictError):
    pass


class AlertStateError(ConflictError):
    pass


class InvalidEventError(InvalidInputError):
    pass


class InvalidZoneError(InvalidInputError):
    pass
