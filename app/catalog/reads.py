"""What a read shows, named for the read cache (app/kit/read_cache.py): a read marks its response with the
scopes it shows, a write invalidates the scopes it changed."""

from __future__ import annotations

CATALOG = "catalog"  # every list of artists: the catalog's pages, the home page, the genres


def artist_reads(artist_id: int) -> str:
    """Everything shown about one artist: its record, its portraits and their versions, its page."""
    return f"artist:{artist_id}"
