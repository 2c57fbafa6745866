"""The generation routes' wire shapes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from app.catalog.schemas import NOTES_LAYOUT, unstorable_character
from app.generation.jobs import Job, Status

MAX_INSTRUCTION = 2000  # characters of a revision's instruction


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


def _instruction_text(text: str) -> str:
    """Line breaks and tabs allowed (a textarea sends them), no other control character."""
    character = unstorable_character(text, NOTES_LAYOUT)
    if character is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(character):04X})")
    return text


Instruction = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_INSTRUCTION),
    AfterValidator(_instruction_text),
]


class RevisionCreate(BaseModel):
    """`POST .../article/revisions`: what the reader wants changed in the latest version ("shorter, and
    more on the 1970s"). It reaches the writer quoted, inside a turn that restates the rules: it can ask for
    another portrait, never for other rules (docs/revisions.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    instruction: Instruction
