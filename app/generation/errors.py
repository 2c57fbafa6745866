"""The generation package's errors."""

from __future__ import annotations

from app.errors import AppError, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"
    message = "No job has this id (finished jobs are kept for ATELIER_JOB_RETENTION seconds)."


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
