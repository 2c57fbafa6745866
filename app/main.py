"""The application factory and its lifespan, which owns the engine and every shared client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypedDict

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import health
from app.catalog.router import router as catalog_router
from app.db import create_engine, create_sessionmaker
from app.errors import install_error_handlers
from app.kit.body_limit import BodySizeLimitMiddleware
from app.settings import Settings, get_settings
from app.web.router import router as web_router

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("atelier")


class AppState(TypedDict):
    """What the lifespan builds; FastAPI hands it to every request as `request.state`."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[AppState]:
        engine = create_engine(settings.database_url)
        try:
            yield AppState(settings=settings, engine=engine, sessionmaker=create_sessionmaker(engine))
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Atelier",
        summary="An artist catalog that writes long portraits and streams them as they are written.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(catalog_router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app


# The ASGI app uvicorn serves (`app.main:app`); building it connects to nothing until the lifespan runs.
app = create_app()
