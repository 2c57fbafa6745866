"""Stored portraits: store a finished generation as a new version, read them back, tell when one is stale.

An article is stale when its artist changed after it was written, or when it was written by the demo
writer and a real upstream is configured now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.articles.models import Article
from app.articles.render import render_markdown
from app.articles.repository import ArticleRepository
from app.articles.schemas import ArticlePublic, ArticleVersion, ArticleVersions
from app.catalog.models import Artist
from app.catalog.schemas import ArticleSummary
from app.errors import NotFound
from app.kit.text import count_words

ARTICLE_PATH = "/api/v1/collection/artists/{artist_id}/article"


class Versioned(Protocol):
    """Anything with an artist's id and last change: the model, or its public view."""

    @property
    def id(self) -> int: ...
    @property
    def updated_at(self) -> datetime: ...


class ArticleNotFound(NotFound):
    code = "article_not_found"
    message = "No portrait is stored for this artist yet."


@dataclass(frozen=True)
class ArticleDraft:
    """A finished generation, ready to store."""

    artist_id: int
    language: str
    length: str
    markdown: str
    model: str
    writer: str
    finish_reason: str
    usage: dict[str, Any] | None
    duration_ms: int
    ttft_ms: int | None
    job_id: str | None


def is_stale(article: Article, artist_updated_at: datetime, upstream_configured: bool) -> bool:
    return artist_updated_at > article.created_at or (article.writer == "demo" and upstream_configured)


def article_url(article: Article) -> str:
    base = ARTICLE_PATH.format(artist_id=article.artist_id)
    return f"{base}/versions/{article.version}?language={article.language}&length={article.length}"


class ArticleService:
    def __init__(self, upstream_configured: bool) -> None:
        self.upstream_configured = upstream_configured

    async def store(self, sessionmaker: async_sessionmaker[AsyncSession], draft: ArticleDraft) -> Article:
        """One short transaction; a concurrent writer of the same version makes us take the next one."""
        for _attempt in range(5):
            async with sessionmaker() as session:
                repository = ArticleRepository(session)
                version = await repository.next_version(draft.artist_id, draft.language, draft.length)
                article = Article(
                    artist_id=draft.artist_id,
                    language=draft.language,
                    length=draft.length,
                    version=version,
                    markdown=draft.markdown,
                    words=count_words(draft.markdown),
                    model=draft.model,
                    writer=draft.writer,
                    finish_reason=draft.finish_reason,
                    truncated=draft.finish_reason == "length",
                    usage=draft.usage,
                    duration_ms=draft.duration_ms,
                    ttft_ms=draft.ttft_ms,
                    job_id=draft.job_id,
                )
                try:
                    await repository.add(article)
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    if await session.get(Artist, draft.artist_id) is None:
                        raise
                    continue
                return article
        raise RuntimeError("could not store the article: too many concurrent versions")

    async def latest(self, session: AsyncSession, artist: Artist, language: str, length: str) -> Article:
        article = await ArticleRepository(session).latest(artist.id, language, length)
        if article is None:
            raise ArticleNotFound(f"No {length} portrait in {language!r} is stored for {artist.name} yet.")
        return article

    async def find_latest(
        self, session: AsyncSession, artist_id: int, language: str, length: str
    ) -> Article | None:
        return await ArticleRepository(session).latest(artist_id, language, length)

    async def find_by_id(self, session: AsyncSession, article_id: int) -> Article | None:
        return await ArticleRepository(session).get(article_id)

    async def version(
        self, session: AsyncSession, artist: Artist, language: str, length: str, version: int
    ) -> Article:
        article = await ArticleRepository(session).version(artist.id, language, length, version)
        if article is None:
            raise ArticleNotFound(f"Version {version} of this portrait does not exist.")
        return article

    async def versions(self, session: AsyncSession, artist: Artist) -> ArticleVersions:
        articles = await ArticleRepository(session).versions(artist.id)
        return ArticleVersions(items=[self.version_view(article, artist) for article in articles])

    async def summaries(
        self, session: AsyncSession, artists: Sequence[Versioned], language: str, length: str
    ) -> dict[int, ArticleSummary]:
        latest = await ArticleRepository(session).latest_for_artists(
            [a.id for a in artists], language, length
        )
        updated = {artist.id: artist.updated_at for artist in artists}
        return {
            artist_id: ArticleSummary(
                article_id=article.id,
                version=article.version,
                language=article.language,
                length=article.length,
                words=article.words,
                stale=is_stale(article, updated[artist_id], self.upstream_configured),
                truncated=article.truncated,
                created_at=article.created_at,
                url=article_url(article),
            )
            for artist_id, article in latest.items()
        }

    def version_view(self, article: Article, artist: Artist) -> ArticleVersion:
        return ArticleVersion(
            article_id=article.id,
            artist_id=article.artist_id,
            version=article.version,
            language=article.language,
            length=article.length,
            words=article.words,
            model=article.model,
            writer=article.writer,
            stale=is_stale(article, artist.updated_at, self.upstream_configured),
            truncated=article.truncated,
            finish_reason=article.finish_reason,
            created_at=article.created_at,
            url=article_url(article),
        )

    def public_view(self, article: Article, artist: Artist) -> ArticlePublic:
        return ArticlePublic(
            **self.version_view(article, artist).model_dump(),
            markdown=article.markdown,
            html=render_markdown(article.markdown),
            usage=article.usage,
            duration_ms=article.duration_ms,
            ttft_ms=article.ttft_ms,
        )
