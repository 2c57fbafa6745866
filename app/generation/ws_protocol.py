"""What a WebSocket client may send on `/ws/v1/articles`: one JSON object per text message, an action each.

    {"action": "generate", "request_id": "a1", "artist_id": 7, "language": "en", "length": "short", "refresh": false}
    {"action": "stop", "request_id": "a2", "stream": "<stream id>"}
    {"action": "resume", "request_id": "a3", "last_event_id": "<stream>:<seq>"}
    {"action": "cancel", "request_id": "a4", "job_id": "<job id>"}
    {"action": "auth", "token": "<API token>"}

`request_id` is the client's own (a string of 1-128 characters, or an integer), repeated in every answer to
the action. Input is as strict as the HTTP API's: an unknown field, an id sent as a string, a flag sent as
0 are refused. `parse` reads one message into an action, or into the `Malformed` answer the client gets
(`bad_request`: not a JSON object, or no known action; `validation_error` with `fields`: an action whose
fields break its rules). Nothing here does anything: `ws.py` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints, ValidationError

from app.articles.params import Length
from app.kit.ids import MAX_ID, MIN_ID

MAX_REQUEST_ID = 128
# JSON numbers a JavaScript client can hold exactly.
REQUEST_ID_NUMBERS = 2**53 - 1

RequestIdValue = (
    Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_REQUEST_ID)]
    | Annotated[StrictInt, Field(ge=-REQUEST_ID_NUMBERS, le=REQUEST_ID_NUMBERS)]
)


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Request(_Action):
    request_id: RequestIdValue


class Generate(_Request):
    """The portrait stream: a stored article replayed, a running job joined, or a new job (as
    `GET .../article/stream` without `Last-Event-ID`)."""

    action: Literal["generate"]
    artist_id: Annotated[int, Field(ge=MIN_ID, le=MAX_ID)]
    language: Annotated[str, StringConstraints(min_length=1, max_length=10)] | None = None
    length: Length = "long"
    refresh: bool = False


class Stop(_Request):
    """Leave a stream this socket follows (as closing an SSE stream: the job's grace applies)."""

    action: Literal["stop"]
    stream: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Resume(_Request):
    """The events after `last_event_id` (as `Last-Event-ID` on an SSE stream)."""

    action: Literal["resume"]
    last_event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Cancel(_Request):
    """Cancel a job (as `DELETE /api/v1/jobs/{job_id}`; needs a token)."""

    action: Literal["cancel"]
    job_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


class Auth(_Action):
    """Present an API token (instead of the `bearer.<token>` subprotocol); usually the first message."""

    action: Literal["auth"]
    request_id: RequestIdValue | None = None
    token: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


Action = Generate | Stop | Resume | Cancel | Auth
ACTIONS: dict[str, type[Action]] = {
    "generate": Generate,
    "stop": Stop,
    "resume": Resume,
    "cancel": Cancel,
    "auth": Auth,
}


@dataclass(frozen=True)
class Malformed:
    """A message that is no action: what the client is told (`bad_request` or `validation_error`)."""

    code: Literal["bad_request", "validation_error"]
    message: str
    request_id: str | int | None = None  # echoed when the message had a usable one
    fields: list[dict[str, str]] = field(default_factory=list)


def parse(text: str | None, max_chars: int) -> Action | Malformed:
    """One client message (`None`: a binary frame) as an action, or why it is none."""
    if text is None:
        return Malformed("bad_request", "Messages are JSON objects sent as text frames, not binary.")
    if len(text) > max_chars:
        return Malformed("bad_request", f"A message may be at most {max_chars} characters long.")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        return Malformed("bad_request", "The message is not valid JSON.")
    if not isinstance(message, dict):
        return Malformed("bad_request", 'A message is a JSON object with an "action".')
    request_id = _request_id(message.get("request_id"))
    action = message.get("action")
    model = ACTIONS.get(action) if isinstance(action, str) else None
    if model is None:
        known = ", ".join(ACTIONS)
        return Malformed("bad_request", f'Unknown or missing "action"; one of: {known}.', request_id)
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        return Malformed("validation_error", "Some fields are not valid.", request_id, _fields(exc))


def _request_id(value: Any) -> str | int | None:
    """A request id fit to be echoed, or None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= REQUEST_ID_NUMBERS:
        return value
    return None


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "loc": ".".join(str(part) for part in error["loc"]) or "message",
            "message": str(error.get("msg", "invalid")),
        }
        for error in exc.errors(include_url=False)
    ]
