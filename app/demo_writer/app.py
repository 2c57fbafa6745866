"""The demo writer: a fake-but-plausible LLM speaking Mistral's chat completions protocol over real HTTP.

Atelier has to work on a fresh machine without an API key. Rather than a special code path inside the app,
the demo is a separate little server that the ordinary client talks to exactly as it talks to Mistral: the
same request, the same Server-Sent Events, the same finish reasons and usage. So the streaming client, its
timeouts, cancellation and the relay to browsers all run for real in demo mode, and the demo cannot drift
into testing something the production path never does.

It is a fake vendor, not part of our client: it imports nothing of Atelier's but the shared word counter and
reads the prompt as a model would, as text. It finds the artist's facts in the JSON document between
`<artist_facts>` tags, the target length in "about N words" and the language in "(xx)" before them, and
writes a deterministic text from templates (`prose.py`), paced like a model at `tokens_per_second`:
- a portrait, for a plain request;
- an outline, as a JSON object, for a request that begins "Plan the portrait";
- one section of a planned portrait, for "Write section K of N ..." (the outline is read from its tag);
- a continuation, when the last message is the assistant's (Mistral's `"prefix": true` or llama.cpp's
  prefill): the text it would write without that turn, from where the turn stops, with the turn echoed in
  the first delta as both vendors do.
That it reads what `app/generation/prompt.py` writes is checked by a test (tests/demo_writer), not by an
import. A `DemoProfile` makes it misbehave as real models do, for benchmarks.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.demo_writer.prose import (
    UNNAMED,
    Facts,
    facts_from_document,
    plain,
    plan,
    write_portrait,
    write_section,
)

FACTS_OPEN, FACTS_CLOSE = "<artist_facts>", "</artist_facts>"
OUTLINE_OPEN, OUTLINE_CLOSE = "<outline>", "</outline>"
PLAN_REQUEST = "Plan the portrait"
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}
DEFAULT_TARGET_WORDS = 600
# A prompt asking for a million words must not make the demo build a million-word string.
MAX_TARGET_WORDS = 20_000
# Without facts there is little to say, so the portrait stays short whatever length was asked for.
UNNAMED_TARGET_WORDS = 400
_TARGET = re.compile(r"about (\d+) words")
_LANGUAGE = re.compile(r"\((\w\w)\)")
_SECTION = re.compile(r"Write section (\d+) of (\d+) of the portrait")
# A token is a word and the whitespace after it, so the streamed pieces join back into the exact markdown.
# (Leading whitespace too, or only whitespace: the rest of a text cut just before a space or a newline.)
_TOKEN = re.compile(r"\s*\S+\s*|\s+")
# Where uvicorn's transport is kept for a request, so a dropped call can close the connection (`_Stream`).
_TRANSPORT = "demo_writer.transport"


@dataclass(frozen=True)
class DemoProfile:
    """How the demo misbehaves, to simulate real models in benchmarks.

    - `stop_ratio`: the text for a request is round(asked words x ratio) words long, cut after a sentence
      (studies find most models stop near 65 % of what they are asked). A continuation continues that same
      text, so it stops at the same point. Portraits and sections; never outlines.
    - `max_words_per_call`: each call sends at most this many new tokens, then finishes with "length" if
      the text is not done (a provider's output cap).
    - `drop_every`: every k-th call to the app drops the connection after about half of its new tokens,
      with no finish reason and no [DONE].
    """

    stop_ratio: float = 1.0
    max_words_per_call: int | None = None
    drop_every: int | None = None

    def __post_init__(self) -> None:
        if not self.stop_ratio > 0:
            raise ValueError("stop_ratio must be positive")
        for name in ("max_words_per_call", "drop_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")


class _DemoApp(Starlette):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's middleware wraps `send`; only uvicorn's own (a bound method of the request cycle)
        # leads to the socket, so it is looked up here, before the wrapping.
        if scope["type"] == "http":
            scope[_TRANSPORT] = getattr(getattr(send, "__self__", None), "transport", None)
        await super().__call__(scope, receive, send)


def create_demo_app(tokens_per_second: float, profile: DemoProfile | None = None) -> Starlette:
    """The demo writer as an ASGI app with one route, `POST /v1/chat/completions` (streaming only)."""
    if not tokens_per_second > 0:
        raise ValueError("tokens_per_second must be positive")
    profile = profile or DemoProfile()
    calls = itertools.count(1)

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            return _error(422, "The body must be a JSON object.")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(422, "The body must be a JSON object with a `messages` list.")
        if body.get("stream") is not True:
            return _error(400, "The demo writer only streams: set `stream` to true.")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            return _error(422, "`max_tokens` must be a positive integer.")
        model = body.get("model") if isinstance(body.get("model"), str) else "atelier-demo"
        messages = [m for m in body["messages"] if isinstance(m, dict) and isinstance(m.get("content"), str)]
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        # A trailing assistant turn is text to go on from, with or without Mistral's `"prefix": true`.
        echo = messages.pop()["content"] if messages and messages[-1].get("role") == "assistant" else ""
        user = [m["content"] for m in messages if m.get("role") == "user"]
        text = text_for_prompt(user[-1] if user else "", profile.stop_ratio)
        tokens = _continuation(text, echo)
        limits = [n for n in (max_tokens, profile.max_words_per_call) if n is not None]
        to_send = tokens[: min(limits)] if limits else tokens
        finish_reason: str | None = "length" if len(to_send) < len(tokens) else "stop"
        drop = profile.drop_every is not None and next(calls) % profile.drop_every == 0
        if drop:
            to_send, finish_reason = to_send[: len(to_send) // 2], None
        events = _events(echo, to_send, finish_reason, str(model), prompt_tokens, tokens_per_second)
        return _Stream(events, drop=drop, transport=request.scope.get(_TRANSPORT))

    return _DemoApp(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])


def text_for_prompt(prompt: str, stop_ratio: float = 1.0) -> str:
    """What the demo writes for a user message like those `app.generation.prompt` builds: a portrait, an
    outline (JSON) or one section of a planned portrait."""
    # Every tagged document escapes "<", so the facts are behind the last facts tag and the outline behind
    # the last outline tag before them; only the instructions before the tags are free text (a section's
    # point comes from an outline), and in them the first "about N words" and "(xx)" are ours.
    facts_at = prompt.rfind(FACTS_OPEN)
    outline_at = prompt.rfind(OUTLINE_OPEN, 0, max(facts_at, 0))
    instructions = prompt[: next((at for at in (outline_at, facts_at) if at >= 0), len(prompt))]
    target = _TARGET.search(instructions)
    target_words = min(int(target.group(1)), MAX_TARGET_WORDS) if target else DEFAULT_TARGET_WORDS
    language = _LANGUAGE.search(instructions)
    code = language.group(1) if language else "en"
    english_note = None
    if code != "en":
        name = LANGUAGE_NAMES.get(code, code)
        english_note = (
            f"The demo writer only writes in English, so this portrait is in English rather than {name}."
        )
    facts = facts_from_document(_document(prompt, facts_at, FACTS_OPEN, FACTS_CLOSE))
    section = _SECTION.match(instructions)
    if section:
        outline = _document(prompt, outline_at, OUTLINE_OPEN, OUTLINE_CLOSE)
        words = max(1, round(target_words * stop_ratio))
        number, count = int(section.group(1)), int(section.group(2))
        return _section(facts or UNNAMED, outline, number, count, words, english_note)
    if facts is None:
        facts, target_words = UNNAMED, min(target_words, UNNAMED_TARGET_WORDS)
    if instructions.startswith(PLAN_REQUEST):
        return json.dumps(plan(facts, target_words), ensure_ascii=False, indent=2)
    # The default profile writes exactly what it always did; a stop ratio cuts to the length it sets.
    words = max(1, round(target_words * stop_ratio))
    return write_portrait(facts, words, english_note, exact=stop_ratio != 1.0)


def _document(prompt: str, at: int, opening: str, closing: str) -> Any:
    end = prompt.find(closing, at)
    if at < 0 or end < 0:
        return None
    try:
        return json.loads(prompt[at + len(opening) : end])
    except (ValueError, RecursionError):
        return None


def _section(facts: Facts, outline: Any, number: int, count: int, words: int, note: str | None) -> str:
    """Section `number` (from 1) of `count`. The headings and planned words come from the outline; what it
    lacks (a section, a title) is made up, so that any outline gets an answer."""
    outline = outline if isinstance(outline, dict) else {}
    raw = outline.get("sections")
    items = [item if isinstance(item, dict) else {} for item in raw] if isinstance(raw, list) else []
    count = max(1, min(count, 20))
    number = max(1, min(number, count))
    planned: list[tuple[str, int]] = []
    for index in range(count):
        item = items[index] if index < len(items) else {}
        planned_words = item.get("words")
        if not isinstance(planned_words, int) or isinstance(planned_words, bool) or planned_words < 1:
            planned_words = words
        planned.append(
            (plain(item.get("title"), 200) or f"Part {index + 1}", min(planned_words, MAX_TARGET_WORDS))
        )
    title = plain(outline.get("title"), 200) or facts.name
    return write_section(facts, title, planned, number - 1, words, note)


def _continuation(text: str, echo: str) -> list[str]:
    """The tokens that go on from `echo` (the assistant turn, "" for none). Our own text (a prefix of
    `text`) goes on exactly where it stops, so the two join into `text`. Text that is not ours goes on with
    `text` from as many tokens as it has words (split on whitespace): a model would not start over."""
    if text.startswith(echo):
        return _TOKEN.findall(text[len(echo) :])
    rest: list[str] = _TOKEN.findall(text)[len(echo.split()) :]
    if rest and not echo[-1].isspace():
        rest[0] = f" {rest[0]}"
    return rest


class _Stream(StreamingResponse):
    """An event stream that, when `drop` is set, ends by closing the connection: no final chunk of the
    chunked encoding, so the client sees the connection end early, as when a provider's connection breaks."""

    def __init__(self, events: AsyncIterator[str], *, drop: bool, transport: Any) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.drop, self.transport = drop, transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.drop:
            return await super().__call__(scope, receive, send)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        if not callable(getattr(self.transport, "close", None)):
            # Not uvicorn, or a transport we cannot reach: an error after the response started makes
            # the server close the connection too (and log it).
            raise ConnectionAbortedError("the demo writer drops this call, as its profile asks")
        self.transport.close()  # flushes what was written, then ends the connection
        # Returning before uvicorn sees the connection lost would make it complain of an unfinished response.
        with anyio.move_on_after(2):
            while (await receive())["type"] != "http.disconnect":
                pass


async def _events(
    echo: str,
    tokens: list[str],
    finish_reason: str | None,
    model: str,
    prompt_tokens: int,
    rate: float,
) -> AsyncIterator[str]:
    """The stream: a role chunk, the tokens (the echo merged into the first one, as Mistral and llama.cpp
    send it), then the finish with usage and [DONE], unless `finish_reason` is None (a dropped call)."""
    completion_id = f"demo-{uuid.uuid4().hex}"
    created = int(time.time())

    def event(delta: dict[str, str], finish_reason: str | None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""}, None)
    pieces = [echo + tokens[0], *tokens[1:]] if tokens else [echo] if echo and finish_reason else []
    # Piece i is due at start + i / rate. Sending everything due and then sleeping until the next one keeps
    # the average rate exact at thousands of tokens a second, where one sleep per token would drift and burn
    # CPU. Nothing here catches CancelledError, so a client hanging up stops the stream at the next await.
    start = time.monotonic()
    sent = 0
    while sent < len(pieces):
        due = min(len(pieces), math.floor((time.monotonic() - start) * rate) + 1)
        if due > sent:
            yield "".join(event({"content": piece}, None) for piece in pieces[sent:due])
            sent = due
        if sent < len(pieces):
            await anyio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    if finish_reason is None:
        return
    # The echo is not output: only new tokens count as completion tokens (the echo is in the prompt).
    completion = len(tokens)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    yield event({"content": ""}, finish_reason, usage=usage) + "data: [DONE]\n\n"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)
