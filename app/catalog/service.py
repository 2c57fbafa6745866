"""The catalog's rules: names unique case- and accent-insensitively, years in order, one transaction per
write, owned here (routers never see a session). The database holds both rules too (a unique hash of the
folded name, a CHECK on the years), so two writes racing cannot break them: the loser's write is refused
and answered 409 or 422 like the checks made here first.

Other packages learn of changes through hooks rather than being called from here: the catalog knows
nothing of articles, running jobs or caches (`on_deleted` is how deleting an artist cancels its jobs; every
hook runs after the commit and before the caller answers, which is how the read cache forgets in time).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog.errors import ArtistNotFound, name_taken, refusal, years_out_of_order
from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.schemas import ArtistCreate, ArtistUpdate
from app.kit.ids import parse_id

ArtistHook = Callable[[int], Awaitable[None]]


async def require_artist(session: AsyncSession, artist_id: int) -> Artist:
    """The artist, or `ArtistNotFound`: for any service that reads an artist inside its own session."""
    artist = await ArtistRepository(session).get(artist_id)
    if artist is None:
        raise ArtistNotFound.for_id(artist_id)
    return artist


class CatalogService:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.on_created: list[ArtistHook] = []
        self.on_updated: list[ArtistHook] = []
        self.on_deleted: list[ArtistHook] = []

    async def search(self, query: ArtistQuery) -> tuple[Sequence[Artist], int]:
        async with self.sessionmaker() as session:
            return await ArtistRepository(session).search(query)

    async def genres(self) -> list[str]:
        async with self.sessionmaker() as session:
            return await ArtistRepository(session).genres()

    async def get(self, artist_id: int) -> Artist:
        async with self.sessionmaker() as session:
            return await require_artist(session, artist_id)

    async def find(self, id_or_name: str) -> Artist | None:
        """An artist by id (all digits) or by exact name (compared folded), for the command line."""
        async with self.sessionmaker() as session:
            repository = ArtistRepository(session)
            artist_id = parse_id(id_or_name)  # bounded: a 5,000-digit argument is a name, not an id
            artist = None if artist_id is None else await repository.get(artist_id)
            return artist or await repository.get_by_name(id_or_name)

    async def create(self, data: ArtistCreate) -> Artist:
        async with self.sessionmaker() as session:
            repository = ArtistRepository(session)
            if await repository.name_taken(data.name):
                raise name_taken(data.name)
            artist = Artist(**data.model_dump())
            try:
                await repository.add(artist)
                await session.commit()
            except IntegrityError as exc:  # a concurrent create won the race for the name
                raise (refusal(exc, data.name) or exc) from exc
        await self._notify(self.on_created, artist.id)
        return artist

    async def update(self, artist_id: int, data: ArtistUpdate) -> Artist:
        """Change the fields sent that differ from the stored ones, in one UPDATE that also bumps
        `facts_version` (a PATCH that changes nothing changes nothing: no version, no `updated_at`).

        The checks below read the row first and answer the common case; the UPDATE applies only the
        changed columns to the row as it is by then, and the database refuses a result that breaks a rule
        (a concurrent PATCH of the other year, or of another artist's name): 422 or 409 all the same."""
        requested = data.model_dump(exclude_unset=True)
        async with self.sessionmaker() as session:
            repository = ArtistRepository(session)
            artist = await require_artist(session, artist_id)
            changes = {field: value for field, value in requested.items() if getattr(artist, field) != value}
            if not changes:
                return artist
            if "name" in changes and await repository.name_taken(changes["name"], except_id=artist_id):
                raise name_taken(changes["name"])
            start = changes.get("active_from", artist.active_from)
            end = changes.get("active_to", artist.active_to)
            if start is not None and end is not None and end < start:
                raise years_out_of_order()
            name = changes.get("name", artist.name)
            try:
                updated = await repository.update(artist_id, changes)
                if updated is None:  # deleted since we read it
                    raise ArtistNotFound.for_id(artist_id)
                await session.commit()
            except IntegrityError as exc:
                raise (refusal(exc, name) or exc) from exc
        await self._notify(self.on_updated, artist_id)
        return updated

    async def delete(self, artist_id: int) -> None:
        async with self.sessionmaker() as session:
            artist = await require_artist(session, artist_id)
            await ArtistRepository(session).delete(artist)
            await session.commit()
        await self._notify(self.on_deleted, artist_id)

    @staticmethod
    async def _notify(hooks: list[ArtistHook], artist_id: int) -> None:
        for hook in hooks:
            await hook(artist_id)
