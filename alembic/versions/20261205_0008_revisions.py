"""revisions: a version records the instruction it was revised by and the version it rewrote

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

What it adds (issue 13, revising a portrait in conversation): `articles.instruction` (TEXT, NULL) and
`articles.revises_version` (INTEGER, NULL: the version of the same artist, language and length the revision
was written from). Both are NULL for every existing row: they were written from the facts alone.

The downgrade drops the two columns (the revisions stay, as plain versions).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("articles", sa.Column("instruction", sa.Text(), nullable=True))
    op.add_column("articles", sa.Column("revises_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("revises_version")
        batch.drop_column("instruction")
