"""The one place that knows the Server-Sent Events wire format.

Every event is `id: <stream>:<seq>`, `event: <type>`, and one `data:` line of JSON. JSON escapes CR and LF
inside strings, so model text can never end a line, forge a field, or look like a frame of its own.

An event is encoded once: the first reader to send it keeps the bytes on the event (`Event.wire`), and a
thousand readers of one job share them.
"""

from __future__ import annotations

import json

from app.streaming.events import Event
from app.streaming.ids import event_id

MEDIA_TYPE = "text/event-stream; charset=utf-8"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"
PING_INTERVAL = 15.0


def encode(stream_id: str, event: Event) -> bytes:
    # The memo holds the frame under the one stream id its event belongs to (an event is appended to one
    # log and read only through it), so the id need not be part of the memo.
    wire = event.wire
    if wire is None:
        wire = event.wire = encode_frame(stream_id, event)
    return wire


def encode_frame(stream_id: str, event: Event) -> bytes:
    data = json.dumps(event.payload.data(), ensure_ascii=False, separators=(",", ":"))
    # A lone surrogate (an upstream may send "\\ud800") cannot be UTF-8: write it as the JSON escape it
    # came from instead of failing the whole stream. Non-ASCII only occurs inside JSON strings here.
    # seq 0 is a notice of this process, not an event of the log (the log could not be read: `error`
    # broker_unavailable): it carries no id, so a reader resumes after the last event it really had.
    id_line = f"id: {event_id(stream_id, event.seq)}\n" if event.seq else ""
    frame = f"{id_line}event: {event.type}\ndata: {data}\n\n"
    return frame.encode("utf-8", errors="backslashreplace")


def encode_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()
