"""The catalog's errors."""

from __future__ import annotations

from app.errors import Conflict, NotFound


class ArtistNotFound(NotFound):
    code = "artist_not_found"
    message = "No artist has this id."


def name_taken(name: str) -> Conflict:
    return Conflict(f"An artist named {name!r} already exists.")
