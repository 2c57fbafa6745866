"""The generation routes' wire shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from app.generation.jobs import Job, Status


def status_url(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}"


def stream_url(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}/stream"


class JobErrorPublic(BaseModel):
    code: str
    message: str


class JobAccepted(BaseModel):
    """`POST .../jobs`: the job runs; poll `status_url` or read `stream_url`."""

    job_id: str
    status: Status
    status_url: str
    stream_url: str

    @classmethod
    def of(cls, job: Job) -> JobAccepted:
        return cls(
            job_id=job.id, status=job.status, status_url=status_url(job.id), stream_url=stream_url(job.id)
        )


class AlreadyStored(BaseModel):
    """`POST .../jobs` when the portrait is already stored: nothing to run."""

    job_id: None = None
    status: Literal["done"] = "done"
    article_id: int
    version: int
    article_url: str


class JobStatus(BaseModel):
    job_id: str
    status: Status
    artist_id: int
    language: str
    length: str
    words: int
    article_id: int | None
    version: int | None
    error: JobErrorPublic | None
    readers: int
    status_url: str
    stream_url: str

    @classmethod
    def of(cls, job: Job) -> JobStatus:
        return cls(
            job_id=job.id,
            status=job.status,
            artist_id=job.artist_id,
            language=job.language,
            length=job.length,
            words=job.words,
            article_id=job.article_id,
            version=job.version,
            error=None
            if job.error is None
            else JobErrorPublic(code=job.error.code, message=job.error.message),
            readers=job.readers,
            status_url=status_url(job.id),
            stream_url=stream_url(job.id),
        )
