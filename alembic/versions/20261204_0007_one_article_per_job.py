"""one article per job: a unique index on articles.job_id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Several processes (issue 12): a job taken over from a stalled process must never be stored twice, by its old
owner coming back and by the new one. The claim on Redis decides who may store; this index is the last word
if both get that far. NULL job ids (articles stored before jobs had ids) are not compared. Existing duplicate
job ids (none can exist: ids are random UUIDs, one store per job) would make the upgrade fail loudly.

The downgrade drops the index.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("uq_articles_job_id", "articles", ["job_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_articles_job_id", table_name="articles")
