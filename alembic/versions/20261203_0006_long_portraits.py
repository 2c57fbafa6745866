"""long portraits: each version keeps its length score, its continuations and (planned) its outline

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

What it adds (issue 11, "Long portraits that always finish"): `articles.continuations` (INTEGER NOT NULL,
0 for existing rows: they were written in one call), `articles.length_score` (FLOAT, LongBench-Write's S_l
against the target of the version's length, computed here for existing rows from their word counts) and
`articles.outline` (JSON, NULL for a portrait written without a plan: its title and sections, each with its
start in the markdown, so a replay announces the same sections).

The downgrade drops the three columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.articles.params import TARGET_WORDS
from app.generation.longform import length_score

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

articles = sa.table(
    "articles",
    sa.column("id", sa.Integer),
    sa.column("length", sa.String),
    sa.column("words", sa.Integer),
    sa.column("length_score", sa.Float),
)


def upgrade() -> None:
    op.add_column(
        "articles", sa.Column("continuations", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column("articles", sa.Column("length_score", sa.Float(), nullable=True))
    op.add_column("articles", sa.Column("outline", sa.JSON(), nullable=True))
    _score_stored_articles()


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("outline")
        batch.drop_column("length_score")
        batch.drop_column("continuations")


def _score_stored_articles() -> None:
    connection = op.get_bind()
    update = (
        articles.update()
        .where(articles.c.id == sa.bindparam("article_id"))
        .values(length_score=sa.bindparam("score"))
    )
    after_id = 0
    while True:
        rows = connection.execute(
            sa.select(articles.c.id, articles.c.length, articles.c.words)
            .where(articles.c.id > after_id)
            .order_by(articles.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            update,
            [
                {"article_id": row.id, "score": length_score(TARGET_WORDS.get(row.length, 0), row.words)}
                for row in rows
            ],
        )
        after_id = rows[-1].id
