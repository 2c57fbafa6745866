"""Typed access to what the lifespan built, as FastAPI dependencies.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost
about 3 ms of CPU per request here (bench/relay.py's notes), for functions that only read request.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.articles.service import ArticleService
from app.generation.jobs import JobManager
from app.settings import Settings


async def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


async def _jobs(request: Request) -> JobManager:
    jobs: JobManager = request.state.jobs
    return jobs


async def _articles(request: Request) -> ArticleService:
    articles: ArticleService = request.state.articles
    return articles


SettingsDep = Annotated[Settings, Depends(_settings)]
JobsDep = Annotated[JobManager, Depends(_jobs)]
ArticlesDep = Annotated[ArticleService, Depends(_articles)]


async def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.state.sessionmaker
    return sessionmaker


# For routes that stream: open a short session, close it, then stream (never hold one across a stream).
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessionmaker)]
