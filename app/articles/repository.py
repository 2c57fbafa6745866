"""Every SQL query on stored portraits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.articles.models import Article
from app.catalog.models import Artist


class ArticleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def latest(self, artist_id: int, language: str, length: str) -> Article | None:
        return await self.session.scalar(
            select(Article)
            .where(Article.artist_id == artist_id, Article.language == language, Article.length == length)
            .order_by(Article.version.desc())
            .limit(1)
        )

    async def with_artist(
        self, artist_id: int, language: str, length: str, version: int | None = None
    ) -> tuple[Artist, Article | None] | None:
        """The artist and one of its portraits (the latest, or `version`) in one query: None when there is
        no such artist, `(artist, None)` when there is no such portrait."""
        wanted = (
            select(Article.id)
            .where(Article.artist_id == artist_id, Article.language == language, Article.length == length)
            .order_by(Article.version.desc())
            .limit(1)
        )
        if version is not None:
            wanted = wanted.where(Article.version == version)
        row = (
            await self.session.execute(
                select(Artist, Article)
                .outerjoin(Article, Article.id == wanted.scalar_subquery())
                .where(Artist.id == artist_id)
            )
        ).first()
        return None if row is None else (row[0], row[1])

    async def latest_for_artists(
        self, artist_ids: Sequence[int], language: str, length: str
    ) -> dict[int, Article]:
        if not artist_ids:
            return {}
        newest = (
            select(Article.artist_id, func.max(Article.version).label("version"))
            .where(Article.artist_id.in_(artist_ids), Article.language == language, Article.length == length)
            .group_by(Article.artist_id)
            .subquery()
        )
        rows = await self.session.scalars(
            select(Article)
            .join(
                newest,
                (Article.artist_id == newest.c.artist_id) & (Article.version == newest.c.version),
            )
            .where(Article.language == language, Article.length == length)
        )
        return {article.artist_id: article for article in rows}

    async def get(self, article_id: int) -> Article | None:
        return await self.session.get(Article, article_id)

    async def versions(self, artist_id: int) -> Sequence[Article]:
        rows = await self.session.scalars(
            select(Article)
            .where(Article.artist_id == artist_id)
            .order_by(Article.language, Article.length, Article.version.desc())
        )
        return rows.all()

    async def versions_of(self, artist_id: int, language: str, length: str, limit: int) -> Sequence[Article]:
        """The newest `limit` versions of one portrait (artist, language, length), newest first."""
        rows = await self.session.scalars(
            select(Article)
            .where(Article.artist_id == artist_id, Article.language == language, Article.length == length)
            .order_by(Article.version.desc())
            .limit(limit)
        )
        return rows.all()

    async def version(self, artist_id: int, language: str, length: str, version: int) -> Article | None:
        return await self.session.scalar(
            select(Article).where(
                Article.artist_id == artist_id,
                Article.language == language,
                Article.length == length,
                Article.version == version,
            )
        )

    async def next_version(self, artist_id: int, language: str, length: str) -> int:
        current = await self.session.scalar(
            select(func.max(Article.version)).where(
                Article.artist_id == artist_id, Article.language == language, Article.length == length
            )
        )
        return (current or 0) + 1

    async def outdated_renderings(
        self, renderer_version: int, after_id: int, limit: int
    ) -> Sequence[Article]:
        """Up to `limit` articles rendered by another renderer version than `renderer_version`, by id."""
        rows = await self.session.scalars(
            select(Article)
            .where(Article.renderer_version != renderer_version, Article.id > after_id)
            .order_by(Article.id)
            .limit(limit)
        )
        return rows.all()

    async def of_job(self, job_id: str) -> Article | None:
        found = await self.session.scalars(select(Article).where(Article.job_id == job_id))
        return found.first()

    async def add(self, article: Article) -> Article:
        self.session.add(article)
        await self.session.flush()
        return article
