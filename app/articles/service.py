"""Stored portraits: store a finished generation as a new version, read them back, tell when one is stale.

An article is stale when its artist's facts changed since the facts it was written from (the article's
`facts_version` is below the artist's: versions, never clocks, so a portrait written from old facts and
stored after the change is stale too), or when it was written by the demo writer and a real upstream is
configured now. Every method opens its own short session: no caller holds one, and none is open while a
stream is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.articles import render
from app.articles.errors import ArticleNotFound
from app.articles.models import Article
from app.articles.repository import ArticleRepository
from app.articles.schemas import (
    ArticlePublic,
    ArticleSummary,
    ArticleVersion,
    ArticleVersions,
    OutlineEntry,
)
from app.catalog.errors import ArtistNotFound
from app.catalog.models import Artist
from app.catalog.repository import ArtistRepository
from app.catalog.service import ArtistHook, require_artist
from app.kit.text import count_words

ARTICLE_PATH = "/api/v1/collection/artists/{artist_id}/article"
REFRESH_BATCH = 200

logger = logging.getLogger(__name__)


class Versioned(Protocol):
    """An artist as staleness needs it: its id and the version of its facts (the model)."""

    @property
    def id(self) -> int: ...
    @property
    def facts_version(self) -> int: ...


class JobStored(Exception):
    """An article of this job is stored already (another process stored it: the job was taken over)."""


class ArtistGone(Exception):
    """The artist was deleted before its portrait could be stored: nothing was stored. Not a failure of
    ours: a generation that meets it ends as cancelled, which the deletion also asks for."""

    def __init__(self, artist_id: int) -> None:
        super().__init__(f"artist {artist_id} no longer exists")
        self.artist_id = artist_id


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
    # The artist's facts_version the text was written from (the job's snapshot). None: from the facts as
    # they are stored now (a draft not written by a job), read in the store's own transaction.
    facts_version: int | None = None
    # Cut before its end (None: when the last call ended by the token limit).
    truncated: bool | None = None
    continuations: int = 0
    length_score: float | None = None
    # A planned portrait's outline: its title and sections, each with its start in the markdown.
    outline: dict[str, Any] | None = None
    # A revision: the reader's instruction, and the version it rewrote.
    instruction: str | None = None
    revises_version: int | None = None


def article_url(article: Article) -> str:
    base = ARTICLE_PATH.format(artist_id=article.artist_id)
    return f"{base}/versions/{article.version}?language={article.language}&length={article.length}"


def latest_url(artist_id: int, language: str, length: str) -> str:
    return f"{ARTICLE_PATH.format(artist_id=artist_id)}?language={language}&length={length}"


def outline_entries(outline: dict[str, Any] | None) -> list[OutlineEntry] | None:
    """A stored outline's sections as the API shows them (without their places in the markdown)."""
    sections = outline.get("sections") if isinstance(outline, dict) else None
    if not isinstance(sections, list):
        return None
    return [
        OutlineEntry(title=str(s.get("title", "")), target_words=int(s.get("target_words", 0)))
        for s in sections
        if isinstance(s, dict)
    ]


class ArticleService:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, upstream_configured: bool) -> None:
        self.sessionmaker = sessionmaker
        self.upstream_configured = upstream_configured
        self._warned_outdated = False
        # Called with the artist's id once a new version is committed, before `store` returns (so before
        # the generation's `done` is sent): how the read cache forgets the artist's older reads.
        self.on_stored: list[ArtistHook] = []

    # --- writing ---------------------------------------------------------------------------------------

    async def store(self, draft: ArticleDraft) -> Article:
        """One short transaction; a concurrent writer of the same version makes us take the next one.
        `ArtistGone` (and nothing stored) when the artist was deleted, before or while we store. The HTML is
        rendered here, once: a stored version never changes, and reads serve it as stored."""
        html = render.render_markdown(draft.markdown)
        for _attempt in range(5):
            async with self.sessionmaker() as session:
                artist = await ArtistRepository(session).get(draft.artist_id)
                if artist is None:
                    raise ArtistGone(draft.artist_id)
                facts_version = artist.facts_version if draft.facts_version is None else draft.facts_version
                repository = ArticleRepository(session)
                version = await repository.next_version(draft.artist_id, draft.language, draft.length)
                article = Article(
                    artist_id=draft.artist_id,
                    language=draft.language,
                    length=draft.length,
                    version=version,
                    markdown=draft.markdown,
                    html=html,
                    renderer_version=render.RENDERER_VERSION,
                    words=count_words(draft.markdown),
                    model=draft.model,
                    writer=draft.writer,
                    finish_reason=draft.finish_reason,
                    truncated=draft.finish_reason == "length" if draft.truncated is None else draft.truncated,
                    usage=draft.usage,
                    duration_ms=draft.duration_ms,
                    ttft_ms=draft.ttft_ms,
                    job_id=draft.job_id,
                    facts_version=facts_version,
                    continuations=draft.continuations,
                    length_score=draft.length_score,
                    outline=draft.outline,
                    instruction=draft.instruction,
                    revises_version=draft.revises_version,
                )
                try:
                    await repository.add(article)
                    await session.commit()
                except IntegrityError as exc:
                    # the artist deleted since we read it (its foreign key), or a concurrent version
                    await session.rollback()
                    session.expunge_all()
                    if await ArtistRepository(session).get(draft.artist_id) is None:
                        raise ArtistGone(draft.artist_id) from exc
                    if draft.job_id is not None and await repository.of_job(draft.job_id) is not None:
                        raise JobStored(draft.job_id) from exc
                    continue
            for hook in self.on_stored:
                await hook(draft.artist_id)
            return article
        raise RuntimeError("could not store the article: too many concurrent versions")

    async def refresh_renderings(self, batch: int = REFRESH_BATCH) -> int:
        """Re-render every stored article whose HTML another renderer version made (`RENDERER_VERSION` was
        bumped), `batch` rows per transaction; how many were re-rendered. Run by `atelier migrate`."""
        refreshed, after_id = 0, 0
        while True:
            async with self.sessionmaker() as session:
                rows = await ArticleRepository(session).outdated_renderings(
                    render.RENDERER_VERSION, after_id, batch
                )
                if not rows:
                    return refreshed
                for article in rows:
                    article.html = render.render_markdown(article.markdown)
                    article.renderer_version = render.RENDERER_VERSION
                await session.commit()
            refreshed += len(rows)
            after_id = rows[-1].id

    # --- reading ---------------------------------------------------------------------------------------

    async def lookup(self, artist_id: int, language: str, length: str) -> tuple[Artist, Article | None]:
        """The artist (or `ArtistNotFound`) and its latest stored portrait, in one query."""
        return await self._with_artist(artist_id, language, length)

    async def latest(self, artist_id: int, language: str, length: str) -> tuple[Artist, Article]:
        artist, article = await self.lookup(artist_id, language, length)
        if article is None:
            raise ArticleNotFound(f"No {length} portrait in {language!r} is stored for {artist.name} yet.")
        return artist, article

    async def version(
        self, artist_id: int, language: str, length: str, version: int
    ) -> tuple[Artist, Article]:
        artist, article = await self._with_artist(artist_id, language, length, version)
        if article is None:
            raise ArticleNotFound(f"Version {version} of this portrait does not exist.")
        return artist, article

    async def _with_artist(
        self, artist_id: int, language: str, length: str, version: int | None = None
    ) -> tuple[Artist, Article | None]:
        async with self.sessionmaker() as session:
            found = await ArticleRepository(session).with_artist(artist_id, language, length, version)
        if found is None:
            raise ArtistNotFound.for_id(artist_id)
        return found

    async def versions(self, artist_id: int) -> ArticleVersions:
        async with self.sessionmaker() as session:
            artist = await require_artist(session, artist_id)
            articles = await ArticleRepository(session).versions(artist_id)
        return ArticleVersions(items=[self.version_view(article, artist) for article in articles])

    async def portrait_versions(
        self, artist_id: int, language: str, length: str, limit: int = 50
    ) -> Sequence[Article]:
        """The newest `limit` versions of one portrait, newest first (the artist page lists them)."""
        async with self.sessionmaker() as session:
            return await ArticleRepository(session).versions_of(artist_id, language, length, limit)

    async def find_with_artist(self, article_id: int) -> tuple[Article, Artist] | None:
        """A stored article by id, with its artist (for resuming a replay)."""
        async with self.sessionmaker() as session:
            article = await ArticleRepository(session).get(article_id)
            if article is None:
                return None
            artist = await ArtistRepository(session).get(article.artist_id)
        return None if artist is None else (article, artist)

    async def summaries(
        self, artists: Sequence[Versioned], language: str, length: str
    ) -> dict[int, ArticleSummary]:
        async with self.sessionmaker() as session:
            latest = await ArticleRepository(session).latest_for_artists(
                [a.id for a in artists], language, length
            )
        current = {artist.id: artist for artist in artists}
        return {
            artist_id: ArticleSummary(
                article_id=article.id,
                version=article.version,
                language=article.language,
                length=article.length,
                words=article.words,
                stale=self.is_stale(article, current[artist_id]),
                truncated=article.truncated,
                created_at=article.created_at,
                url=article_url(article),
            )
            for artist_id, article in latest.items()
        }

    # --- views -----------------------------------------------------------------------------------------

    def is_stale(self, article: Article, artist: Versioned) -> bool:
        """Written from older facts than the artist's now (versions, never clocks: the job's snapshot decides,
        whenever and wherever the article was stored), or by the demo writer while an upstream is configured."""
        return article.facts_version < artist.facts_version or (
            article.writer == "demo" and self.upstream_configured
        )

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
            stale=self.is_stale(article, artist),
            truncated=article.truncated,
            finish_reason=article.finish_reason,
            continuations=article.continuations,
            length_score=article.length_score,
            instruction=article.instruction,
            revises_version=article.revises_version,
            created_at=article.created_at,
            url=article_url(article),
        )

    def html(self, article: Article) -> str:
        """The article's HTML: as stored when the current renderer made it (no rendering on a read), else
        rendered now, in memory (never HTML of another renderer version; `atelier migrate` refreshes it)."""
        if article.renderer_version == render.RENDERER_VERSION:
            return article.html
        if not self._warned_outdated:
            self._warned_outdated = True
            logger.warning(
                "stored article %s was rendered by renderer version %s, not %s: rendering it on each read "
                "until `atelier migrate` re-renders the stored articles",
                article.id,
                article.renderer_version,
                render.RENDERER_VERSION,
            )
        return render.render_markdown(article.markdown)

    def public_view(self, article: Article, artist: Artist) -> ArticlePublic:
        return ArticlePublic(
            **self.version_view(article, artist).model_dump(),
            markdown=article.markdown,
            html=self.html(article),
            usage=article.usage,
            duration_ms=article.duration_ms,
            ttft_ms=article.ttft_ms,
            outline=outline_entries(article.outline),
        )
