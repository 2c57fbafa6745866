"""Event ids, `<stream>:<seq>`, the same on every wire (SSE's `id:` field, a WebSocket message's `id`).

Parsed here and nowhere else; what a stream id names (a job, a replay) is the generation package's
business (`generation/positions.py`).
"""

from __future__ import annotations

# A seq never reaches this: a log is bounded by ATELIER_LLM_MAX_OUTPUT_CHARS. The bound keeps `int()` of a
# hostile header cheap and the number inside every database's integer.
MAX_SEQ = 2**31 - 1


def event_id(stream_id: str, seq: int) -> str:
    return f"{stream_id}:{seq}"


def parse_event_id(value: str | None) -> tuple[str, int] | None:
    """`"<stream>:<seq>"` → (stream, seq); None for anything else.

    The seq must be ASCII digits: `str.isdigit()` alone accepts "²" (which `int()` refuses, a 500) and
    other scripts' digits."""
    if not value:
        return None
    stream_id, sep, seq = value.strip().rpartition(":")
    if not sep or not stream_id or not (seq.isascii() and seq.isdigit()) or len(seq) > 12:
        return None
    number = int(seq)
    return (stream_id, number) if number <= MAX_SEQ else None
