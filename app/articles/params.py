"""Which portrait a request means: `language` and `length`, validated before anything else happens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Query

from app.errors import ValidationFailed
from app.settings import SettingsDep

Length = Literal["short", "medium", "long"]
LENGTHS: tuple[Length, ...] = ("short", "medium", "long")
TARGET_WORDS: dict[str, int] = {"short": 600, "medium": 1500, "long": 3000}
LENGTH_LABELS: dict[str, str] = {
    "short": "Short (≈600 words)",
    "medium": "Medium (≈1,500 words)",
    "long": "Long (≈3,000 words)",
}


def as_length(value: str | None) -> Length | None:
    """`value` as a length, or None if it names none."""
    return next((length for length in LENGTHS if length == value), None)


@dataclass(frozen=True)
class ArticleParams:
    language: str
    length: Length


async def article_params(
    settings: SettingsDep,
    language: Annotated[str | None, Query(max_length=10, description="One of ATELIER_LANGUAGES")] = None,
    length: Annotated[Length, Query(description="short ≈600, medium ≈1,500, long ≈3,000 words")] = "long",
) -> ArticleParams:
    language = language or settings.default_language
    if language not in settings.languages:
        allowed = ", ".join(settings.languages)
        raise ValidationFailed(
            fields=[{"loc": "query.language", "message": f"Input should be one of: {allowed}"}]
        )
    return ArticleParams(language=language, length=length)


ArticleParamsDep = Annotated[ArticleParams, Depends(article_params)]
