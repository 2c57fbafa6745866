"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from app.articles.models import Article
from app.catalog.models import Artist

__all__ = ["Article", "Artist"]
