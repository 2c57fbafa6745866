"""The articles' FastAPI dependency: the service the lifespan built (`request.state.articles`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.articles.service import ArticleService


async def _articles(request: Request) -> ArticleService:
    articles: ArticleService = request.state.articles
    return articles


ArticlesDep = Annotated[ArticleService, Depends(_articles)]
