"""data integrity: years held by a CHECK, facts versions, names that fold long, storable text

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

What it adds (review issue 9):
- `artists.facts_version` (1 for every artist) and `articles.facts_version`, the version a portrait was
  written from. Existing articles keep the staleness they had: an article stored at or after its artist's
  last change (`created_at >= updated_at`) gets the artist's version (fresh), an older one gets 0 (stale).
- `ck_artists_active_years`: `active_to IS NULL OR active_from IS NULL OR active_to >= active_from`.
- `artists.name_hash` (SHA-256 of the folded name, unique, `uq_artists_name_hash`) takes over uniqueness
  from `name_key`, which becomes TEXT without a constraint (folding can make a 200-character name several
  thousand characters long), kept for ordering.

Rows that already break a rule are repaired, never refused (the upgrade must not fail on rows the old code
let in), and every repaired artist gets `facts_version` 2 and `updated_at` set to the migration's time,
after the articles' backfill, so its stored portraits (written from the broken facts) read stale:
- years out of order (`active_to < active_from`, which only racing PATCHes could write): `active_to` is
  cleared. Neither year can be trusted over the other, but clearing the end keeps the row's one claim
  the rule never doubted (when the artist started), invents no year (swapping would), and reads as "end
  unknown" until someone sets it again, which the API then checks against `active_from`.
- control characters the API now refuses (any in names, countries, genres and works; any but line breaks
  and tabs in notes; NUL everywhere, which only SQLite could hold): each becomes a space, then the text is
  trimmed; a genre or work left empty is dropped, a country left empty is cleared.
- a name left folding to nothing becomes "Artist <id>"; a name left folding like an earlier artist's gets
  " (<id>)" appended, so the unique hash can be built.

The downgrade restores the columns and constraints, not the repaired values; it fails on PostgreSQL if a
name now folds to more than 200 characters (it could not be stored that way before).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from app.kit.text import fold

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

YEARS_IN_ORDER = "active_to IS NULL OR active_from IS NULL OR active_to >= active_from"
NOTES_LAYOUT = frozenset("\n\r\t")
NAME_LENGTH = 200

artists = sa.table(
    "artists",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("name_key", sa.Text),
    sa.column("name_hash", sa.String),
    sa.column("country", sa.String),
    sa.column("genres", sa.JSON),
    sa.column("active_from", sa.Integer),
    sa.column("active_to", sa.Integer),
    sa.column("notable_works", sa.JSON),
    sa.column("notes", sa.Text),
    sa.column("search_text", sa.Text),
    sa.column("genre_keys", sa.Text),
    sa.column("facts_version", sa.Integer),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
articles = sa.table(
    "articles",
    sa.column("artist_id", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("facts_version", sa.Integer),
)


def upgrade() -> None:
    op.add_column(
        "artists", sa.Column("facts_version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.add_column("artists", sa.Column("name_hash", sa.String(length=64), nullable=True))
    op.add_column(
        "articles", sa.Column("facts_version", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    _backfill_article_versions()
    _repair_and_fold_artists()
    with op.batch_alter_table("artists") as batch:
        batch.drop_constraint("uq_artists_name_key", type_="unique")
        batch.alter_column(
            "name_key", existing_type=sa.String(length=200), type_=sa.Text(), existing_nullable=False
        )
        batch.alter_column("name_hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint(op.f("uq_artists_name_hash"), ["name_hash"])
        batch.create_check_constraint(op.f("ck_artists_active_years"), YEARS_IN_ORDER)


def downgrade() -> None:
    with op.batch_alter_table("artists") as batch:
        batch.drop_constraint(op.f("ck_artists_active_years"), type_="check")
        batch.drop_constraint(op.f("uq_artists_name_hash"), type_="unique")
        batch.alter_column(
            "name_key", existing_type=sa.Text(), type_=sa.String(length=200), existing_nullable=False
        )
        batch.create_unique_constraint(op.f("uq_artists_name_key"), ["name_key"])
        batch.drop_column("name_hash")
        batch.drop_column("facts_version")
    with op.batch_alter_table("articles") as batch:
        batch.drop_column("facts_version")


# --- data ----------------------------------------------------------------------------------------------


def _backfill_article_versions() -> None:
    """Every artist is at version 1 here: an article stored at or after its artist's last change was fresh
    and gets 1; an older one was stale and gets 0."""
    artist = artists.alias("artist")
    of_the_article = artist.c.id == articles.c.artist_id
    updated_at = sa.select(artist.c.updated_at).where(of_the_article).scalar_subquery()
    version = sa.select(artist.c.facts_version).where(of_the_article).scalar_subquery()
    op.execute(
        articles.update().values(
            facts_version=sa.case((articles.c.created_at >= updated_at, version), else_=0)
        )
    )


def _clean(text: str, allowed: frozenset[str] = frozenset()) -> str:
    return "".join(
        " " if character not in allowed and unicodedata.category(character) in ("Cc", "Cs") else character
        for character in text
    )


def _name_hash(name: str) -> str:
    return hashlib.sha256(fold(name).encode()).hexdigest()


def _with_suffix(name: str, suffix: str) -> str:
    return name[: NAME_LENGTH - len(suffix)] + suffix


def _repair_and_fold_artists() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(artists).order_by(artists.c.id)).mappings().all()
    now = datetime.now(UTC)
    hashes: set[str] = set()
    for row in rows:
        facts: dict[str, Any] = {
            "name": _clean(row["name"]).strip(),
            "country": _clean(row["country"] or "").strip() or None,
            "genres": [g for g in (_clean(genre).strip() for genre in row["genres"] or []) if g],
            "notable_works": [w for w in (_clean(work).strip() for work in row["notable_works"] or []) if w],
            "notes": None if row["notes"] is None else _clean(row["notes"], NOTES_LAYOUT),
            "active_to": row["active_to"],
        }
        if row["active_from"] is not None and row["active_to"] is not None:
            if row["active_to"] < row["active_from"]:
                facts["active_to"] = None
        if not fold(facts["name"]):
            facts["name"] = f"Artist {row['id']}"
        if _name_hash(facts["name"]) in hashes:
            facts["name"] = _with_suffix(facts["name"], f" ({row['id']})")
        digest = _name_hash(facts["name"])
        hashes.add(digest)
        values: dict[str, Any] = {"name_key": fold(facts["name"]), "name_hash": digest}
        if any(facts[field] != row[field] for field in facts):
            values.update(
                facts,
                search_text="\n".join(
                    fold(part) for part in [facts["name"], *facts["genres"], *facts["notable_works"]]
                ),
                genre_keys="".join(f"|{fold(genre)}|" for genre in facts["genres"]),
                facts_version=row["facts_version"] + 1,
                updated_at=now,
            )
        connection.execute(artists.update().where(artists.c.id == row["id"]).values(**values))
