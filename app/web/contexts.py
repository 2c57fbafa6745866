"""The typed contexts the pages render: each template reads only `page`, one of these."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Request

from app.catalog.models import Artist
from app.catalog.schemas import ArtistPublic, ArtistsPublic

API_ARTISTS = "/api/v1/collection/artists"


@dataclass(frozen=True)
class ArtistCard:
    id: int
    name: str
    kind: str
    country: str | None
    genres: list[str]
    years: str

    @classmethod
    def of(cls, artist: ArtistPublic) -> ArtistCard:
        return cls(
            id=artist.id,
            name=artist.name,
            kind=artist.kind,
            country=artist.country,
            genres=artist.genres,
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
        cls, request: Request, *, result: ArtistsPublic, q: str, genre: str, genres: list[str]
    ) -> CatalogPage:
        pages = max(1, -(-result.total // result.per_page))
        filters = {key: value for key, value in (("q", q), ("genre", genre)) if value}

        def page_url(number: int) -> str:
            return "/?" + urlencode({**filters, "page": number})

        return cls(
            title="Catalog",
            q=q,
            genre=genre,
            genres=genres,
            artists=[ArtistCard.of(item) for item in result.items],
            total=result.total,
            page=result.page,
            pages=pages,
            json_url=API_ARTISTS + ("?" + urlencode(filters) if filters else ""),
            previous_url=page_url(result.page - 1) if result.page > 1 else None,
            next_url=page_url(result.page + 1) if result.page < pages else None,
        )


@dataclass(frozen=True)
class ArtistPage:
    title: str
    artist_id: int
    name: str
    kind: str
    country: str | None
    genres: list[str]
    years: str
    notable_works: list[str]
    notes: str | None
    json_url: str

    @classmethod
    def build(cls, artist: Artist) -> ArtistPage:
        return cls(
            title=artist.name,
            artist_id=artist.id,
            name=artist.name,
            kind=artist.kind,
            country=artist.country,
            genres=list(artist.genres),
            years=years_active(artist.active_from, artist.active_to),
            notable_works=list(artist.notable_works),
            notes=artist.notes,
            json_url=f"{API_ARTISTS}/{artist.id}",
        )


@dataclass(frozen=True)
class ErrorPage:
    title: str
    message: str
    json_url: str | None = None
