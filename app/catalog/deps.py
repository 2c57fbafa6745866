"""The catalog's FastAPI dependency: the service the lifespan built (`request.state.catalog`).

`async def` on purpose, as every dependency here: FastAPI runs a plain `def` dependency in its thread pool,
a hop that cost about 3 ms of CPU per request (bench/relay.py's notes), for a function that reads state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.catalog.service import CatalogService


async def _catalog(request: Request) -> CatalogService:
    catalog: CatalogService = request.state.catalog
    return catalog


CatalogDep = Annotated[CatalogService, Depends(_catalog)]
