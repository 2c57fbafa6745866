"""search index: substring search, paging and the genres list at 100,000 artists

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

What it adds (docs/search.md), with the same results as before, only found faster:
- `artist_genres` (artist_id, position, key, name): each artist's genres, one per row, removed with the
  artist (ON DELETE CASCADE); its index on (key, artist_id, position) lists the genres without reading
  every artist. Backfilled here from `artists.genres`, BATCH artists at a time.
- `ix_artists_order`, the order of every list (`name_key, id`): on SQLite an index on (name_key, id); on
  PostgreSQL on (left(name_key, 200), id), since a B-tree entry there holds at most ~2.7 kB and a folded
  name can be 5,800 characters. The repository orders by left(name_key, 200), name_key, id there, which
  is the same order under a bytewise collation (the database's is C.UTF-8, and folded text is ASCII).
- a trigram index for `LIKE '%word%'` on `search_text` and `genre_keys`:
  - SQLite: `artists_search`, an FTS5 table (tokenizer trigram) with external content (`artists`: it stores
    no copy of the text), kept in step by three triggers and filled here by its 'rebuild' command. A later
    migration that rebuilds `artists` in batch mode drops those triggers with the old table and must run
    `_create_sqlite_triggers` again.
  - PostgreSQL: GIN indexes with `gin_trgm_ops` (extension pg_trgm, created if missing).

The downgrade drops all of it (not the pg_trgm extension, which other databases objects may use).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.text import fold

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000

artists = sa.table("artists", sa.column("id", sa.Integer), sa.column("genres", sa.JSON))
artist_genres = sa.table(
    "artist_genres",
    sa.column("artist_id", sa.Integer),
    sa.column("position", sa.Integer),
    sa.column("key", sa.Text),
    sa.column("name", sa.String),
)

SQLITE_TRIGGERS = {
    "artists_search_insert": """
        CREATE TRIGGER artists_search_insert AFTER INSERT ON artists BEGIN
            INSERT INTO artists_search (rowid, search_text, genre_keys)
            VALUES (new.id, new.search_text, new.genre_keys);
        END""",
    # external content: the index forgets a row by being told the values it indexed
    "artists_search_delete": """
        CREATE TRIGGER artists_search_delete AFTER DELETE ON artists BEGIN
            INSERT INTO artists_search (artists_search, rowid, search_text, genre_keys)
            VALUES ('delete', old.id, old.search_text, old.genre_keys);
        END""",
    "artists_search_update": """
        CREATE TRIGGER artists_search_update AFTER UPDATE OF search_text, genre_keys ON artists BEGIN
            INSERT INTO artists_search (artists_search, rowid, search_text, genre_keys)
            VALUES ('delete', old.id, old.search_text, old.genre_keys);
            INSERT INTO artists_search (rowid, search_text, genre_keys)
            VALUES (new.id, new.search_text, new.genre_keys);
        END""",
}


def upgrade() -> None:
    op.create_table(
        "artist_genres",
        sa.Column("artist_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.ForeignKeyConstraint(
            ["artist_id"],
            ["artists.id"],
            name=op.f("fk_artist_genres_artist_id_artists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artist_id", "position", name=op.f("pk_artist_genres")),
    )
    op.create_index("ix_artist_genres_key", "artist_genres", ["key", "artist_id", "position"])
    _backfill_artist_genres()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_artists_order ON artists (left(name_key, 200), id)")
        op.execute("CREATE INDEX ix_artists_search_text_trgm ON artists USING gin (search_text gin_trgm_ops)")
        op.execute("CREATE INDEX ix_artists_genre_keys_trgm ON artists USING gin (genre_keys gin_trgm_ops)")
    else:
        op.execute("CREATE INDEX ix_artists_order ON artists (name_key, id)")
        op.execute(
            "CREATE VIRTUAL TABLE artists_search USING fts5("
            "search_text, genre_keys, content='artists', content_rowid='id', tokenize='trigram')"
        )
        _create_sqlite_triggers()
        op.execute("INSERT INTO artists_search (artists_search) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for index in ("ix_artists_genre_keys_trgm", "ix_artists_search_text_trgm", "ix_artists_order"):
            op.execute(f"DROP INDEX {index}")
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE artists_search")
        op.execute("DROP INDEX ix_artists_order")
    op.drop_index("ix_artist_genres_key", table_name="artist_genres")
    op.drop_table("artist_genres")


def _create_sqlite_triggers() -> None:
    for statement in SQLITE_TRIGGERS.values():
        op.execute(statement)


def _backfill_artist_genres() -> None:
    """One row per genre of every artist, read BATCH artists at a time by id (memory stays bounded)."""
    connection = op.get_bind()
    after_id = 0
    while True:
        rows = connection.execute(
            sa.select(artists.c.id, artists.c.genres)
            .where(artists.c.id > after_id)
            .order_by(artists.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        genre_rows = [
            {"artist_id": row.id, "position": position, "key": fold(genre), "name": genre}
            for row in rows
            for position, genre in enumerate(row.genres or [])
        ]
        if genre_rows:
            connection.execute(artist_genres.insert(), genre_rows)
        after_id = rows[-1].id
