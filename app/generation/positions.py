"""Where a reader was: `Last-Event-ID` read as a position in a job's log or in a stored article's replay.

Every stream id Atelier hands out is made and read here: a job's id (hex), or `replay-<article id>`.
Anything else, or a number out of bounds, is no position at all (the reader starts afresh), never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.kit.ids import parse_id
from app.streaming.ids import parse_event_id

REPLAY_PREFIX = "replay-"
JOB_ID = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class JobPosition:
    job_id: str
    seq: int


@dataclass(frozen=True)
class ReplayPosition:
    article_id: int
    seq: int


def replay_stream_id(article_id: int) -> str:
    return f"{REPLAY_PREFIX}{article_id}"


def parse_position(last_event_id: str | None) -> JobPosition | ReplayPosition | None:
    parsed = parse_event_id(last_event_id)
    if parsed is None:
        return None
    stream_id, seq = parsed
    if stream_id.startswith(REPLAY_PREFIX):
        article_id = parse_id(stream_id.removeprefix(REPLAY_PREFIX))
        return None if article_id is None else ReplayPosition(article_id, seq)
    if JOB_ID.fullmatch(stream_id):
        return JobPosition(stream_id, seq)
    return None


def seq_in(job_id: str, last_event_id: str | None) -> int:
    """Where a reader of the job `job_id` was: the seq of its last event id if that id is this job's, else
    0 (from the start)."""
    position = parse_position(last_event_id)
    return position.seq if isinstance(position, JobPosition) and position.job_id == job_id else 0
