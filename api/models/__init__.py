"""Tables and API models, one module per resource; importing this registers every table."""

from api.models.audit import AuditEvent
from api.models.bureaus import Bureau
from api.models.flights import Flight, Frame, Job, Observation
from api.models.notices import BureauLedgerTotal, Finding, LedgerTotal, Notice, NoticeEvent
from api.models.outbox import DeliveryAttempt, OutboxMessage
from api.models.sites import Site
from api.models.users import ApiKey, LoginThrottle, Role, User

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Bureau",
    "BureauLedgerTotal",
    "DeliveryAttempt",
    "Finding",
    "Flight",
    "Frame",
    "Job",
    "LedgerTotal",
    "LoginThrottle",
    "Notice",
    "NoticeEvent",
    "Observation",
    "OutboxMessage",
    "Role",
    "Site",
    "User",
]
