"""The one place that knows the Server-Sent Events wire format.

Every event is `id: <stream>:<seq>`, `event: <type>`, and one `data:` line of JSON. JSON escapes CR and LF
inside strings, so model text can never end a line, forge a field, or look like a frame of its own.
"""

from __future__ import annotations

import json
from typing import Any

from app.streaming.events import Event

MEDIA_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"
PING_INTERVAL = 15.0


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
    return stream_id, int(seq)


def encode(stream_id: str, event: Event) -> bytes:
    if event.frame is not None:
        return event.frame
    return encode_frame(stream_id, event.seq, event.type, event.data)


def encode_frame(stream_id: str, seq: int, type_: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate (an upstream may send "\\ud800") cannot be UTF-8: write it as the JSON escape it
    # came from instead of failing the whole stream. Non-ASCII only occurs inside JSON strings here.
    frame = f"id: {event_id(stream_id, seq)}\nevent: {type_}\ndata: {data}\n\n"
    return frame.encode("utf-8", errors="backslashreplace")


def encode_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()
