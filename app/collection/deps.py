"""The collection's FastAPI dependency: the service the lifespan built (`request.state.collection`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.collection.service import CollectionService


async def _collection(request: Request) -> CollectionService:
    collection: CollectionService = request.state.collection
    return collection


CollectionDep = Annotated[CollectionService, Depends(_collection)]
