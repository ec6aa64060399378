"""Intake's context: everything its routes and handlers need, wired once in ``create_app``
(or a test)."""

from __future__ import annotations

from dataclasses import dataclass

from services.intake.area import ServiceArea
from services.intake.live import ReportChanges
from services.intake.metrics import IntakeMetrics
from services.intake.ratelimit import RateLimiter
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.db import SessionFactory
from shared.uow import UnitsOfWork


@dataclass(frozen=True)
class Intake:
    """Intake's settings, service area, database, rate limiter, live fan-out, metrics and
    clock."""

    settings: IntakeSettings
    area: ServiceArea
    sessions: SessionFactory
    work: UnitsOfWork
    limiter: RateLimiter
    changes: ReportChanges
    metrics: IntakeMetrics
    clock: Clock
