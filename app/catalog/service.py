"""The catalog's rules: names unique case- and accent-insensitively, years in order, one commit per write."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.schemas import ArtistCreate, ArtistPublic, ArtistsPublic, ArtistUpdate
from app.errors import ArtistNotFound, Conflict, ValidationFailed


def _conflict(name: str) -> Conflict:
    return Conflict(f"An artist named {name!r} already exists.")


class CatalogService:
    async def search(self, session: AsyncSession, query: ArtistQuery) -> ArtistsPublic:
        artists, total = await ArtistRepository(session).search(query)
        return ArtistsPublic(
            items=[ArtistPublic.model_validate(artist) for artist in artists],
            total=total,
            page=query.page,
            per_page=query.per_page,
        )

    async def get(self, session: AsyncSession, artist_id: int) -> Artist:
        artist = await ArtistRepository(session).get(artist_id)
        if artist is None:
            raise ArtistNotFound(f"No artist has the id {artist_id}.")
        return artist

    async def create(self, session: AsyncSession, data: ArtistCreate) -> Artist:
        repository = ArtistRepository(session)
        if await repository.name_taken(data.name):
            raise _conflict(data.name)
        artist = Artist(**data.model_dump())
        try:
            await repository.add(artist)
            await session.commit()
        except IntegrityError as exc:  # a concurrent create won the race for the name
            await session.rollback()
            raise _conflict(data.name) from exc
        return artist

    async def update(self, session: AsyncSession, artist_id: int, data: ArtistUpdate) -> Artist:
        repository = ArtistRepository(session)
        artist = await self.get(session, artist_id)
        changes = data.model_dump(exclude_unset=True)
        if "name" in changes and await repository.name_taken(changes["name"], except_id=artist_id):
            raise _conflict(changes["name"])
        start = changes.get("active_from", artist.active_from)
        end = changes.get("active_to", artist.active_to)
        if start is not None and end is not None and end < start:
            raise ValidationFailed(
                fields=[{"loc": "body.active_to", "message": "active_to must not be before active_from"}]
            )
        for field, value in changes.items():
            setattr(artist, field, value)
        try:
            await session.flush()
            await session.commit()
        except IntegrityError as exc:
            await session.rollback()
            raise _conflict(str(changes.get("name", artist_id))) from exc
        return artist

    async def delete(self, session: AsyncSession, artist_id: int) -> None:
        artist = await self.get(session, artist_id)
        await ArtistRepository(session).delete(artist)
        await session.commit()


catalog_service = CatalogService()
