"""The generation package's errors."""

from __future__ import annotations

from app.errors import AppError, Conflict, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"
    message = "No job has this id (finished jobs are kept for ATELIER_JOB_RETENTION seconds)."


class PortraitBusy(Conflict):
    """A revision asked while a job writes that portrait (on any process): the version it would revise is
    not the latest for long, and one job per portrait runs at a time."""

    message = (
        "A job is writing this portrait right now; ask for the revision once it has finished "
        "(it revises the latest stored version)."
    )


class SyncTimeout(AppError):
    status_code = 504
    code = "timeout"
    message = "The portrait is still being written; follow the job instead."


RATE_LIMITED_MESSAGE = "Too many new portraits from this address; try again later."
BROKER_UNAVAILABLE_MESSAGE = "Atelier's shared state (Redis) cannot be reached; try again shortly."


class BrokerDown(AppError):
    """Several processes, and Redis cannot be reached: a job cannot be found, started or cancelled."""

    status_code = 503
    code = "broker_unavailable"
    message = BROKER_UNAVAILABLE_MESSAGE
