"""The articles' errors."""

from __future__ import annotations

from app.errors import NotFound


class ArticleNotFound(NotFound):
    code = "article_not_found"
    message = "No portrait is stored for this artist yet."
