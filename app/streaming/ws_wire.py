"""The one place that knows the WebSocket message format (`WS /ws/v1/articles`, docs/api.md "WebSocket").

Every message the server sends is one JSON object in one text frame, with a `type`:

- an event of a stream: the event's own object (`Event.payload.data()`, exactly what SSE's `data:` line
  carries), plus `id` (`<stream>:<seq>`, SSE's `id:`; absent on a seq-0 notice of this process, as in SSE),
  `stream`, and the `request_id` of the action it answers;
- an answer that is not an event (`stopped`, `cancelled`, `authenticated`, `nothing_after`), or an `error`
  about an action itself (no `id`, no `stream`), with the action's `request_id`;
- `{"type":"ping"}` after `PING_INTERVAL` seconds in which nothing else was sent.

An event is encoded once: the first reader keeps its message up to the `request_id` on the event
(`Event.ws_wire`), and every reader of the same log adds only its own `,"request_id":...}` (`request_tag`,
built once per subscription), so a thousand readers of one job share one encoding, as with SSE.

Text is sent as text: `json.dumps` keeps non-ASCII as it is and escapes every control character, so a
message is always one valid JSON object. A lone surrogate (an upstream may send "\\ud800") cannot be UTF-8:
it is written as the JSON escape it came from rather than failing the stream (as `sse.py` does).
"""

from __future__ import annotations

import json
from typing import Any

from app.streaming import sse
from app.streaming.events import Error, Event
from app.streaming.ids import event_id

RequestId = str | int | None

PING = '{"type":"ping"}'
PING_INTERVAL = sse.PING_INTERVAL  # the same silence as the SSE stream's `: ping`


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _utf8_safe(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="backslashreplace").decode()
    return text


def request_tag(request_id: RequestId) -> str:
    """What every event message of one subscription ends with: its `request_id` and the closing brace."""
    return _utf8_safe(f',"request_id":{_dumps(request_id)}}}')


def encode(stream_id: str, event: Event, tag: str) -> str:
    """The message of `event` of the stream `stream_id` for the reader whose `request_tag` is `tag`."""
    # The memo holds the message under the one stream id its event belongs to (an event is appended to
    # one log and read only through it), as `sse.encode`'s does.
    head = event.ws_wire
    if head is None:
        head = event.ws_wire = encode_head(stream_id, event)
    return head + tag


def encode_head(stream_id: str, event: Event) -> str:
    data = event.payload.data()
    if event.seq:  # seq 0: this process's notice, not an event of the log (no id: a resume skips nothing)
        data["id"] = event_id(stream_id, event.seq)
    data["stream"] = stream_id
    return _utf8_safe(_dumps(data))[:-1]  # without its closing brace: the reader's tag closes it


def answer(type_: str, request_id: RequestId, **fields: Any) -> str:
    """An answer that is not an event: `{"type": type_, ...fields, "request_id": ...}`."""
    return _utf8_safe(_dumps({"type": type_, **fields, "request_id": request_id}))


def error(
    code: str,
    message: str,
    request_id: RequestId,
    *,
    retryable: bool = False,
    retry_after: int | None = None,
    **extra: Any,
) -> str:
    """An `error` about an action (its fields as the stream's `error` event has them, plus `extra`, e.g.
    `fields` for a `validation_error`); it belongs to no stream, so it has no `id` and no `stream`."""
    data = Error(code, message, retryable, retry_after).data()
    return _utf8_safe(_dumps({**data, **extra, "request_id": request_id}))
