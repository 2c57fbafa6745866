"""Query parameters shared by the article and stream routes, validated before any stream starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Header, Query

from app.deps import SettingsDep
from app.errors import ValidationFailed
from app.streaming.sse import parse_event_id

LengthParam = Literal["short", "medium", "long"]


@dataclass(frozen=True)
class ArticleParams:
    language: str
    length: str


async def article_params(
    settings: SettingsDep,
    language: Annotated[str | None, Query(max_length=10, description="One of ATELIER_LANGUAGES")] = None,
    length: Annotated[
        LengthParam, Query(description="short ≈600, medium ≈1,500, long ≈3,000 words")
    ] = "long",
) -> ArticleParams:
    language = language or settings.default_language
    if language not in settings.languages:
        allowed = ", ".join(settings.languages)
        raise ValidationFailed(
            fields=[{"loc": "query.language", "message": f"Input should be one of: {allowed}"}]
        )
    return ArticleParams(language=language, length=length)


ArticleParamsDep = Annotated[ArticleParams, Depends(article_params)]


async def resume_from(
    last_event_id: Annotated[
        str | None, Query(max_length=200, description="For clients that cannot set headers")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200)] = None,
) -> tuple[str, int] | None:
    """The reader's last event id (header first, then query), or None for a fresh stream."""
    return parse_event_id(last_event_id_header or last_event_id)


ResumeDep = Annotated[tuple[str, int] | None, Depends(resume_from)]
