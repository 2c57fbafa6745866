"""The demo writer: a fake-but-plausible LLM speaking Mistral's chat completions protocol over real HTTP.

Atelier has to work on a fresh machine without an API key. Rather than a special code path inside the app,
the demo is a separate little server that the ordinary client talks to exactly as it talks to Mistral: the
same request, the same Server-Sent Events, the same finish reasons and usage. So the streaming client, its
timeouts, cancellation and the relay to browsers all run for real in demo mode, and the demo cannot drift
into testing something the production path never does.

It is a fake vendor, not part of our client: it imports nothing of Atelier's but the shared word counter and
reads the prompt as a model would, as text. It finds the artist's facts in the JSON document between
`<artist_facts>` tags, the target length in "about N words" and the language in "(xx)" before them, and
writes a deterministic portrait from templates (`prose.py`), paced like a model at `tokens_per_second`.
That it reads what `app/generation/prompt.py` writes is checked by a test (tests/demo_writer), not by an
import.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.demo_writer.prose import UNNAMED, facts_from_document, write_portrait

FACTS_OPEN, FACTS_CLOSE = "<artist_facts>", "</artist_facts>"
LANGUAGE_NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}
DEFAULT_TARGET_WORDS = 600
# A prompt asking for a million words must not make the demo build a million-word string.
MAX_TARGET_WORDS = 20_000
# Without facts there is little to say, so the portrait stays short whatever length was asked for.
UNNAMED_TARGET_WORDS = 400
_TARGET = re.compile(r"about (\d+) words")
_LANGUAGE = re.compile(r"\((\w\w)\)")
# A token is a word and the whitespace after it, so the streamed pieces join back into the exact markdown.
_TOKEN = re.compile(r"\S+\s*")


def create_demo_app(tokens_per_second: float) -> Starlette:
    """The demo writer as an ASGI app with one route, `POST /v1/chat/completions` (streaming only)."""
    if not tokens_per_second > 0:
        raise ValueError("tokens_per_second must be positive")

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
        user = [m["content"] for m in messages if m.get("role") == "user"]
        tokens = _TOKEN.findall(portrait_for_prompt(user[-1] if user else ""))
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        events = _events(tokens, max_tokens, str(model), prompt_tokens, tokens_per_second)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])


def portrait_for_prompt(prompt: str) -> str:
    """The markdown the demo writes for a user message like those `app.generation.prompt` builds."""
    start = prompt.find(FACTS_OPEN)
    # The instructions precede the facts; a note saying "(fr)" or "about 9 words" must not count as one.
    instructions = prompt[:start] if start >= 0 else prompt
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
    facts = None
    end = prompt.find(FACTS_CLOSE, start)
    if start >= 0 and end > start:
        try:
            facts = facts_from_document(json.loads(prompt[start + len(FACTS_OPEN) : end]))
        except (ValueError, RecursionError):
            facts = None
    if facts is None:
        return write_portrait(UNNAMED, min(target_words, UNNAMED_TARGET_WORDS), english_note)
    return write_portrait(facts, target_words, english_note)


async def _events(
    tokens: list[str], max_tokens: int | None, model: str, prompt_tokens: int, rate: float
) -> AsyncIterator[str]:
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
    to_send = tokens if max_tokens is None else tokens[:max_tokens]
    # Token i is due at start + i / rate. Sending everything due and then sleeping until the next one keeps
    # the average rate exact at thousands of tokens a second, where one sleep per token would drift and burn
    # CPU. Nothing here catches CancelledError, so a client hanging up stops the stream at the next await.
    start = time.monotonic()
    sent = 0
    while sent < len(to_send):
        due = min(len(to_send), math.floor((time.monotonic() - start) * rate) + 1)
        if due > sent:
            yield "".join(event({"content": token}, None) for token in to_send[sent:due])
            sent = due
        if sent < len(to_send):
            await anyio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    finish_reason = "length" if len(to_send) < len(tokens) else "stop"
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sent, "total_tokens": prompt_tokens + sent}
    yield event({"content": ""}, finish_reason, usage=usage) + "data: [DONE]\n\n"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)
