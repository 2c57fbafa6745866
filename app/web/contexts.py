"""The typed contexts the pages render: each template reads only `page`, one of these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode

from markupsafe import Markup

from app.articles.diff import Diff, Piece
from app.articles.models import Article
from app.articles.params import LENGTH_LABELS
from app.catalog.models import Artist
from app.catalog.schemas import ArtistRecord
from app.errors import AppError

API_ARTISTS = "/api/v1/collection/artists"


@dataclass(frozen=True)
class ArtistCard:
    artist: ArtistRecord
    years: str

    @classmethod
    def of(cls, artist: Artist) -> ArtistCard:
        return cls(
            artist=ArtistRecord.model_validate(artist),
            years=years_active(artist.active_from, artist.active_to),
        )


def years_active(start: int | None, end: int | None) -> str:
    if start is None:
        return ""
    return f"{start}–{end}" if end is not None else f"{start}–present"


@dataclass(frozen=True)
class CatalogPage:
    title: str
    q: str
    genre: str
    genres: list[str]
    artists: list[ArtistCard]
    total: int
    page: int
    pages: int
    json_url: str
    previous_url: str | None
    next_url: str | None

    @classmethod
    def build(
        cls,
        *,
        artists: Sequence[Artist],
        total: int,
        page: int,
        per_page: int,
        q: str,
        genre: str,
        genres: list[str],
    ) -> CatalogPage:
        pages = max(1, -(-total // per_page))
        filters = {key: value for key, value in (("q", q), ("genre", genre)) if value}

        def page_url(number: int) -> str:
            return "/?" + urlencode({**filters, "page": number})

        return cls(
            title="Catalog",
            q=q,
            genre=genre,
            genres=genres,
            artists=[ArtistCard.of(artist) for artist in artists],
            total=total,
            page=page,
            pages=pages,
            json_url=API_ARTISTS + ("?" + urlencode(filters) if filters else ""),
            previous_url=page_url(page - 1) if page > 1 else None,
            next_url=page_url(page + 1) if page < pages else None,
        )


@dataclass(frozen=True)
class ArtistPage:
    title: str
    artist: ArtistRecord
    years: str
    json_url: str
    portrait: PortraitPanel

    @classmethod
    def build(cls, artist: Artist, portrait: PortraitPanel) -> ArtistPage:
        return cls(
            title=artist.name,
            artist=ArtistRecord.model_validate(artist),
            years=years_active(artist.active_from, artist.active_to),
            json_url=f"{API_ARTISTS}/{artist.id}",
            portrait=portrait,
        )


LENGTHS = list(LENGTH_LABELS.items())


@dataclass(frozen=True)
class OutlineEntry:
    """One section of a planned portrait's table of contents."""

    title: str
    target_words: int


def outline_entries(outline: object) -> tuple[OutlineEntry, ...]:
    """The sections of a stored outline (`{title, sections: [{title, target_words, start}]}`), or none for
    an unplanned portrait or an outline that does not have that shape."""
    sections = outline.get("sections") if isinstance(outline, dict) else None
    if not isinstance(sections, list):
        return ()
    entries = []
    for section in sections:
        if not isinstance(section, dict):
            return ()
        title, words = section.get("title"), section.get("target_words")
        if not isinstance(title, str) or not isinstance(words, int) or isinstance(words, bool):
            return ()
        entries.append(OutlineEntry(title=title, target_words=words))
    return tuple(entries)


@dataclass(frozen=True)
class StoredPortrait:
    """A stored portrait, rendered on the server with the same safe settings as the API."""

    html: Markup
    article_id: int
    version: int
    words: int
    writer: str
    model: str
    created_at: str
    stale: bool
    truncated: bool
    json_url: str
    sections: tuple[OutlineEntry, ...] = ()  # a planned portrait's table of contents


@dataclass(frozen=True)
class VersionEntry:
    """One stored version of the portrait shown, in the page's list of versions."""

    version: int
    created_at: str
    words: int
    writer: str
    truncated: bool
    instruction: str | None  # a revision's instruction (None: written from the facts alone)
    revises_version: int | None
    json_url: str
    diff_url: str | None  # what it changed from the version before it (None for a first version)
    latest: bool


def version_entry(article: Article, latest: bool) -> VersionEntry:
    compared = compared_version(article)
    query = urlencode({"language": article.language, "length": article.length})
    return VersionEntry(
        version=article.version,
        created_at=_when(article),
        words=article.words,
        writer=article.writer,
        truncated=article.truncated,
        instruction=article.instruction,
        revises_version=article.revises_version,
        json_url=f"{API_ARTISTS}/{article.artist_id}/article/versions/{article.version}?{query}",
        diff_url=(
            None
            if compared is None
            else f"/artists/{article.artist_id}/versions/{article.version}/diff?{query}"
        ),
        latest=latest,
    )


def compared_version(article: Article) -> int | None:
    """The version a version is compared with by default: the one it revised, else the one before it."""
    if article.revises_version is not None:
        return article.revises_version
    return article.version - 1 if article.version > 1 else None


def _when(article: Article) -> str:
    return article.created_at.strftime("%d %B %Y, %H:%M UTC")


@dataclass(frozen=True)
class PortraitPanel:
    """The portrait area of an artist page: the stored portrait, or the form that starts one."""

    artist_id: int
    language: str
    length: str
    languages: list[str]
    lengths: list[tuple[str, str]]
    target_words: int
    writer: str  # who would write a new portrait: "demo" or "upstream"
    stored: StoredPortrait | None
    running_job_id: str | None
    stream_url: str
    generate_action: str
    notice: str | None = None
    # The stored versions of this portrait, newest first, and the form asking for a revision of the latest
    # (its instruction kept when the page is shown again after a refusal).
    versions: tuple[VersionEntry, ...] = ()
    revision_action: str = ""
    revision_instruction: str = ""
    instruction_max: int = 0


def stored_portrait(article: Article, html: str, stale: bool) -> StoredPortrait:
    return StoredPortrait(
        html=Markup(html),  # render_markdown output: raw HTML off, links and images filtered
        article_id=article.id,
        version=article.version,
        words=article.words,
        writer=article.writer,
        model=article.model,
        created_at=_when(article),
        stale=stale,
        truncated=article.truncated,
        json_url=f"{API_ARTISTS}/{article.artist_id}/article?{urlencode({'language': article.language, 'length': article.length})}",
        sections=outline_entries(article.outline),
    )


@dataclass(frozen=True)
class JobPage:
    """The page a reader without JavaScript lands on after Generate: it refreshes itself until the portrait
    is stored; with JavaScript, the script follows the job's stream instead."""

    title: str
    artist_id: int
    artist_name: str
    job_id: str
    status: str
    words: int
    target_words: int
    partial_html: Markup
    error: str | None
    json_url: str
    stream_url: str
    artist_url: str
    panel: PortraitPanel
    # A revision's job: the version it revises and the instruction (None for a portrait from the facts).
    revises_version: int | None = None
    instruction: str | None = None


@dataclass(frozen=True)
class DiffPage:
    """What a version changed from another one of the same portrait: the markdown of both compared, every
    piece escaped by the template and marked with <ins>/<del>."""

    title: str
    artist_id: int
    artist_name: str
    artist_url: str
    language: str
    length: str
    old: VersionEntry
    new: VersionEntry
    pieces: tuple[Piece, ...]
    inserted_words: int
    deleted_words: int
    changed: bool
    json_url: str

    @classmethod
    def build(cls, artist: Artist, old: Article, new: Article, diff: Diff, latest: int) -> DiffPage:
        query = urlencode({"language": new.language, "length": new.length})
        new_entry = version_entry(new, new.version == latest)
        return cls(
            title=f"{artist.name}: what version {new.version} changed",
            artist_id=artist.id,
            artist_name=artist.name,
            artist_url=f"/artists/{artist.id}?{query}",
            language=new.language,
            length=new.length,
            old=version_entry(old, old.version == latest),
            new=new_entry,
            pieces=diff.pieces,
            inserted_words=diff.inserted_words,
            deleted_words=diff.deleted_words,
            changed=diff.changed,
            json_url=new_entry.json_url,
        )


# The heading a person sees over an error's message; any other error is headed by its HTTP status.
ERROR_TITLES = {
    "artist_not_found": "Artist not found",
    "job_not_found": "Portrait not found",
    "article_not_found": "Version not found",
    "forbidden": "Request refused",
}


@dataclass(frozen=True)
class ErrorPage:
    title: str
    message: str
    json_url: str | None = None

    @classmethod
    def of(cls, error: AppError) -> ErrorPage:
        return cls(
            title=ERROR_TITLES.get(error.code, HTTPStatus(error.status_code).phrase), message=error.message
        )
