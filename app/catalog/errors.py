"""The catalog's errors."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from app.catalog.models import YEARS_CONSTRAINT
from app.errors import AppError, Conflict, NotFound, ValidationFailed

YEARS_MESSAGE = "active_to must not be before active_from"


class ArtistNotFound(NotFound):
    code = "artist_not_found"
    message = "No artist has this id."

    @classmethod
    def for_id(cls, artist_id: int) -> ArtistNotFound:
        return cls(f"No artist has the id {artist_id}.")


def name_taken(name: str) -> Conflict:
    return Conflict(f"An artist named {name!r} already exists.")


def years_out_of_order() -> ValidationFailed:
    return ValidationFailed(fields=[{"loc": "body.active_to", "message": YEARS_MESSAGE}])


def refusal(exc: IntegrityError, name: str) -> AppError | None:
    """What a write the database refused means to the client: years out of order (the row as it ended,
    after a concurrent change, broke `ck_artists_active_years`), or a name taken (another artist's folded
    name, `uq_artists_name_hash`); None for anything else (a bug: let it be logged)."""
    reason = str(exc.orig)
    if YEARS_CONSTRAINT in reason:
        return years_out_of_order()
    if "name_hash" in reason:
        return name_taken(name)
    return None
