"""`atelier seed`: load the sample catalog. Idempotent: an artist whose name is already there is left alone."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog.models import Artist
from app.catalog.repository import ArtistRepository
from app.catalog.schemas import ArtistCreate
from app.catalog.seed_data import SAMPLE_ARTISTS


async def seed_catalog(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Add the sample artists that are missing; return how many were added."""
    added = 0
    async with sessionmaker() as session:
        repository = ArtistRepository(session)
        for raw in SAMPLE_ARTISTS:
            data = ArtistCreate.model_validate(raw)  # the sample passes the same rules as the API
            if await repository.name_taken(data.name):
                continue
            await repository.add(Artist(**data.model_dump()))
            added += 1
        await session.commit()
    return added
