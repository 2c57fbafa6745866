"""Row ids as clients send them: the one definition of their bounds, for the API's path parameters, the
pages (which read an id from the path themselves) and the ids inside event ids.

Ids are the database's integer keys, and the smallest integer every database stores is 32-bit signed
(PostgreSQL's `integer`), so an id past it can name nothing; asking the database anyway is an
OverflowError in the driver (a 500), not a "not found".
"""

from __future__ import annotations

MIN_ID = 1
MAX_ID = 2**31 - 1
_MAX_DIGITS = len(str(MAX_ID))


def parse_id(text: str) -> int | None:
    """`"42"` -> 42; None for anything that cannot be an id: not plain ASCII digits ("²" is a digit to
    `str.isdigit()`, not to `int()`; "+1", "1e3", "-1" are not ids), zero, or past MAX_ID.

    The length is checked before `int()`, so a 5,000-digit "id" costs nothing (and never reaches the
    interpreter's own digits limit, a ValueError)."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if not significant or len(significant) > _MAX_DIGITS:
        return None
    number = int(significant)
    return number if MIN_ID <= number <= MAX_ID else None
