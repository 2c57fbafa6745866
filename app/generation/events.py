"""Builders for the four stream events, so every producer (a live job, a replay, a refusal) writes the
same shapes the contract names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.generation.prompt import TARGET_WORDS
from app.llm.errors import NOT_RETRYABLE


def metadata(
    *,
    job_id: str | None,
    artist_id: int,
    artist_name: str,
    model: str,
    writer: str,
    cached: bool,
    article_id: int | None,
    version: int | None,
    language: str,
    length: str,
    started_at: datetime,
    stale: bool = False,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "artist": {"id": artist_id, "name": artist_name},
        "model": model,
        "writer": writer,
        "cached": cached,
        "article_id": article_id,
        "version": version,
        "language": language,
        "length": length,
        "target_words": TARGET_WORDS[length],
        "started_at": started_at.isoformat().replace("+00:00", "Z"),
        "stale": stale,
    }


def text(delta: str) -> dict[str, Any]:
    return {"delta": delta}


def done(
    *,
    article_id: int,
    version: int,
    words: int,
    finish_reason: str,
    usage: dict[str, Any] | None,
    duration_ms: int,
) -> dict[str, Any]:
    return {
        "article_id": article_id,
        "version": version,
        "words": words,
        "finish_reason": finish_reason,
        "truncated": finish_reason == "length",
        "usage": usage,
        "duration_ms": duration_ms,
    }


def error(code: str, message: str, retry_after: float | None = None) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "retryable": code not in NOT_RETRYABLE,
        "retry_after": None if retry_after is None else max(0, round(retry_after)),
    }
