"""stored html: each article keeps the HTML rendered when it was stored, with the renderer's version

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

What it adds (issue 10, "Reads at the speed of bytes"): `articles.html` (TEXT) and
`articles.renderer_version` (INTEGER), both NOT NULL. A stored version never changes, so its HTML is made
once, when it is stored, and reads serve it as it is.

Existing rows are backfilled here by rendering their markdown with the renderer as it is when the migration
runs (`app.articles.render`, in Python: id and markdown read in batches by id, each batch updated), and
get that renderer's `RENDERER_VERSION`. When the renderer changes later, `atelier migrate` re-renders the
rows of another version after the upgrade (`ArticleService.refresh_renderings`).

The downgrade drops both columns (the HTML can always be rendered again).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.articles.render import RENDERER_VERSION, render_markdown

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

articles = sa.table(
    "articles",
    sa.column("id", sa.Integer),
    sa.column("markdown", sa.Text),
    sa.column("html", sa.Text),
    sa.column("renderer_version", sa.Integer),
)


def upgrade() -> None:
    op.add_column("articles", sa.Column("html", sa.Text(), nullable=True))
    op.add_column("articles", sa.Column("renderer_version", sa.Integer(), nullable=True))
    _render_stored_articles()
    with op.batch_alter_table("articles") as batch:
        batch.alter_column("html", existing_type=sa.Text(), nullable=False)
        batch.alter_column("renderer_version", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("renderer_version")
        batch.drop_column("html")


# --- data ----------------------------------------------------------------------------------------------


def _render_stored_articles() -> None:
    """Render every article's markdown, BATCH rows at a time (by id, so memory stays bounded)."""
    connection = op.get_bind()
    update = (
        articles.update()
        .where(articles.c.id == sa.bindparam("article_id"))
        .values(html=sa.bindparam("rendered"), renderer_version=RENDERER_VERSION)
    )
    after_id = 0
    while True:
        rows = connection.execute(
            sa.select(articles.c.id, articles.c.markdown)
            .where(articles.c.id > after_id)
            .order_by(articles.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            update, [{"article_id": row.id, "rendered": render_markdown(row.markdown)} for row in rows]
        )
        after_id = rows[-1].id
